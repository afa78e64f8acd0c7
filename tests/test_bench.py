"""bench/run.py's bookkeeping: the ABBA run order, the ratios it reports and the sweep timing on a
tiny input (the full runs are `make bench`, too slow for a test)."""
import math

import pytest

from bench.run import abba_order, run_lines, sweep_speed


def test_abba_order_alternates_which_comes_first():
    assert abba_order(1) == ["plain", "pipeline"]
    assert abba_order(2) == ["plain", "pipeline", "pipeline", "plain"]
    assert abba_order(3) == ["plain", "pipeline", "pipeline", "plain", "plain", "pipeline"]
    with pytest.raises(SystemExit, match="--repeats"):
        abba_order(0)


def fake_runs():
    plain = [{"wall": 400.0, "rss": 2600.0, "test_accuracy": 0.97, "data_s": 3.0, "train_s": 350.0},
             {"wall": 500.0, "rss": 2700.0, "test_accuracy": 0.97, "data_s": 5.0, "train_s": 450.0}]
    pipeline = [{"wall": 210.0, "rss": 1200.0, "test_accuracy": 0.975, "stages": {"train": (180.0, 1200)}},
                {"wall": 190.0, "rss": 1300.0, "test_accuracy": 0.975, "stages": {"train": (160.0, 1300)}}]
    return {"plain": plain, "pipeline": pipeline}


def test_run_lines_lists_runs_in_order_and_takes_ratios_of_medians():
    text = "\n".join(run_lines(fake_runs()))
    rows = [line for line in text.splitlines() if line.startswith("| plain") or line.startswith("| pipeline")]
    # run order: plain, pipeline, pipeline, plain
    assert [row.split(" ")[1] for row in rows] == ["plain", "pipeline", "pipeline", "plain"]
    assert "| 500.0 |" in rows[3] and "| 190.0 |" in rows[2]
    # wall: median 200 / median 450; memory: largest pipeline peak 1300 / median plain 2650
    assert f"| {200 / 450:.2f} | {1300 / 2650:.2f} | +0.5 points |" in text
    assert "per pair (in run order): 0.53, 0.38" in text
    assert "same in every repeat: True" in text
    assert "data 4.0, train 400.0" in text
    assert "| train | 170.0 | 1300 |" in text


def test_run_lines_single_pair_has_no_pair_summary():
    runs = {kind: rs[:1] for kind, rs in fake_runs().items()}
    text = "\n".join(run_lines(runs))
    assert "per pair" not in text
    assert f"| ratio pipeline / plain | {210 / 400:.2f} | {1200 / 2600:.2f} |" in text


def test_sweep_speed_times_both_and_checks_they_agree():
    fast_s, slow_s, agree = sweep_speed(200, 16, repeats=2)
    assert 0 < fast_s < math.inf and 0 < slow_s < math.inf and agree is True
    assert sweep_speed(200, 16, loop=False, repeats=1)[1:] == (None, None)


def test_the_scale_cost_model_recovers_a_known_cost_and_reads_it_at_broden():
    from bench.scale import BRODEN, fit, predict
    truth = (12.0, 0.05, 2e-5)                              # t = a + N (b + c C)
    points = [(n, c, truth[0] + n * (truth[1] + truth[2] * c)) for n in (1000, 2000, 4000) for c in (300, 1200)]
    assert fit(points) == pytest.approx(truth, rel=1e-6)
    assert predict(fit(points), *BRODEN) == pytest.approx(12.0 + 63305 * (0.05 + 2e-5 * 1197), rel=1e-6)
    one_concept_count = [(n, 300, 3.0 + 0.1 * n) for n in (1000, 2000)]     # no C to fit: c is 0
    assert fit(one_concept_count) == pytest.approx((3.0, 0.1, 0.0), abs=1e-9)


def test_the_scale_benchmark_names_a_task_it_does_not_have():
    from bench.scale import main
    with pytest.raises(SystemExit, match="--skip names gpu; allowed: dissect, compose, wpmi, engine, plain"):
        main(["--skip", "gpu"])
