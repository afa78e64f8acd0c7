"""Stage check_params: the whole params file checked, an output that holds the same bytes for
any valid params, one line and nothing written for a rejected one."""
from conftest import ROOT, run_main, tiny_params, working_dir, write_params
from stages import check_params

CHECKED = "artifacts/params_checked.txt"


def test_any_valid_params_give_the_same_bytes(tmp_path, capsys):
    # so that a valid change reruns only the stages reading the changed keys, never all of them
    outputs = []
    for params in (tiny_params(), tiny_params(train={"epochs": 7}, rof={"ranking": "random"})):
        write_params(tmp_path, params)
        with working_dir(tmp_path):
            assert run_main(check_params.main) == 0
        outputs.append((tmp_path / CHECKED).read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].decode().startswith("params.yaml: every section valid (compute, data, train, ")
    n_sections = len(tiny_params())
    last_line = capsys.readouterr().out.splitlines()[-1]
    assert last_line.startswith(f"params.yaml: {n_sections} sections valid (compute, data, ")


def test_the_committed_params_files_pass(tmp_path):
    for name in ("params.yaml", "cifar/params.yaml", "study/params.yaml"):
        with working_dir(ROOT):
            assert run_main(check_params.main, "--params", name, "--run-dir", str(tmp_path / name)) == 0, name


def rejected(folder, capsys, params, *args):
    write_params(folder, params)
    with working_dir(folder):
        status = run_main(check_params.main, *args)
    assert not (folder / CHECKED).exists()           # nothing written
    return status, capsys.readouterr().err


def test_a_rejected_value_is_one_line_and_nothing_written(tmp_path, capsys):
    assert rejected(tmp_path, capsys, tiny_params(train={"epochs": -1})) == (
        2, "error: params.yaml: 'train.epochs' is -1; it must be an integer from 0 to 1000\n")
    # names only a registry knows, checked here too: no stage has to remove its outputs first
    status, err = rejected(tmp_path, capsys, tiny_params(train={"arch": "resnet81"}))
    assert status == 2 and err.startswith("error: params.yaml: 'train.arch' is 'resnet81'; allowed architectures: ")
    status, err = rejected(tmp_path, capsys, tiny_params(data={"test_size": 20000}))
    assert status == 2 and err == ("error: params.yaml: 'data.test_size' is 20000; it must be an integer from 1 to "
                                   "10000 (the test split of mnist)\n")
    status, err = rejected(tmp_path, capsys, tiny_params(extract_features={"layers": ["layer4"]}))
    assert status == 2 and err.startswith("error: params.yaml: 'extract_features.layers' is ['layer4']; it must "
                                          "include avgpool")


def test_every_section_its_pipeline_reads_is_required(tmp_path, capsys):
    params = tiny_params()
    del params["clip_dissect"]
    status, err = rejected(tmp_path, capsys, params)
    assert status == 2 and err.startswith("error: params.yaml: section 'clip_dissect' is missing; it needs the keys ")
    # a misspelt section is refused even where no stage reads it
    status, err = rejected(tmp_path, capsys, {**tiny_params(), "rof2": {"ranking": "l1"}})
    assert status == 2 and err.startswith("error: params.yaml: unknown section 'rof2'; allowed: ")
