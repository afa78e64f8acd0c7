"""netunits.torchvision_compat: torchvision imports beside CPU torch."""
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_torchvision_imports_on_this_torch():
    # A fresh interpreter: the shim must be what makes `torchvision.models` importable, and it
    # must define the nms schema only when torchvision's own extension is missing.
    code = ("from netunits import torchvision_compat as c; m = c.torchvision_models(); "
            "net = m.resnet18(weights=None); "
            "print(len(c._TORCHVISION_SHIM), c._op_defined('torchvision::nms'), "
            "sum(p.numel() for p in net.parameters()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    shims, nms_defined, n_params = out.stdout.split()
    assert nms_defined == "True" and n_params == "11689512"
    extension_ok = subprocess.run([sys.executable, "-c", "from netunits import torchvision_compat as c; "
                                   "print(c._torchvision_extension_loads())"],
                                  cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert shims == ("0" if extension_ok == "True" else "1")
