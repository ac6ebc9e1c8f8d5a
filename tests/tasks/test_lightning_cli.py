"""``domainfm fit --ckpt_path`` reads the checkpoint through the safe loader first: a pickle
with code or a file that is no checkpoint ends in one line naming it, exit 2, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs/medical3d/mae_quickstart.yaml"


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("PAYLOAD RAN",))


@pytest.mark.parametrize("kind", ["pickle_with_code", "not_a_checkpoint"])
def test_fit_refuses_an_unreadable_ckpt_path_naming_it(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / f"{kind}.ckpt"
    if kind == "pickle_with_code":
        torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload()}}, ckpt)
    else:
        ckpt.write_bytes(b"no checkpoint here")
    argv = ["fit", "--config", str(QUICKSTART), f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--ckpt_path", str(ckpt)])
    out = capsys.readouterr()
    assert info.value.code == 2
    assert str(ckpt) in out.err and len(out.err.strip().splitlines()) == 1, out.err
    assert "PAYLOAD RAN" not in out.out + out.err
    unsafe = kind == "pickle_with_code"
    assert ("refusing to load" if unsafe else "not a readable torch checkpoint") in out.err
