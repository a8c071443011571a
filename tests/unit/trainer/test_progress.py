"""Progress: a bar with loss and tokens/s on a terminal, plain lines with ETA otherwise."""

import io

from finetune_cli.main import main
from finetune_trainer.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_tty():
    out = io.StringIO()
    p = Progress(total=4, every=2, stream=out)
    for step in range(1, 5):
        p.update(step, loss=1.0 / step, lr=1e-3, tokens_per_s=1234.0)
    p.note("step 4: eval loss 0.1000")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("step 2/4 loss 0.5000 lr 1.00e-03 tok/s 1,234 eta 0:00:")
    assert lines[1].startswith("step 4/4 loss 0.2500") and lines[2] == "step 4: eval loss 0.1000"
    assert "\r" not in out.getvalue()


def test_bar_on_a_terminal_shows_loss_and_tokens_per_second():
    out = FakeTTY()
    p = Progress(total=3, stream=out)
    for step in range(1, 4):
        p.update(step, loss=0.5, lr=1e-3, tokens_per_s=2000.0)
    p.close()
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and "loss=0.5000" in text and "tok_s=2,000" in text


def test_run_refuses_a_suspended_job(tmp_path, capsys):
    from pathlib import Path

    src = Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "job.yaml"
    job = tmp_path / "job.yaml"
    job.write_text(src.read_text().replace("spec:\n", "spec:\n  suspend: true\n", 1))
    assert main(["run", str(job)]) == 2
    assert "spec.suspend is true" in capsys.readouterr().err
