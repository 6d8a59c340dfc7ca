"""The probe stage runs without the extract stage: no model, decoding or dataset code is imported."""

import subprocess
import sys


def test_probe_does_not_import_extract_code():
    code = (
        "import sys, avsuperb.cli, avsuperb.probe.run, avsuperb.store.reader\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('av', 'torchaudio', 'torchvision')"
        " or m.startswith('avsuperb.extract')]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
