"""`finetune run` on bad input: exit status 2, one line naming the file and line, nothing written to the output."""

from support.cli_runs import finetune, write_job


def test_bad_data_line_fails_cleanly_and_writes_nothing(quickstart_model, tmp_path):
    data = tmp_path / "train.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    data.write_text(good * 3 + '{"messages": [{"role": "user", "content": "hi"}]}\n' + good)
    job = write_job(tmp_path, quickstart_model, **{"dataset.paths": [str(data)]})
    r = finetune("run", str(job))
    assert r.returncode == 2, r.stderr
    assert f"error: {data}:4: " in r.stderr and "assistant" in r.stderr
    assert (r.stdout + r.stderr).count(f"{data}:4: ") == 1, "the error must be printed once"
    assert "Traceback" not in r.stderr and "exitcode" not in r.stderr
    assert not (tmp_path / "out").exists(), "a failed setup must write nothing to the output"


def test_missing_model_directory_names_the_field(tmp_path):
    job = write_job(tmp_path, tmp_path / "no-such-model")
    r = finetune("run", str(job))
    assert r.returncode == 2
    assert "spec.model.path" in r.stderr and "no such directory" in r.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_folder_of_the_users_files_is_refused_untouched(quickstart_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    job = write_job(tmp_path, quickstart_model)
    r = finetune("run", str(job))
    assert r.returncode == 2, r.stderr
    assert f"{job}:" in r.stderr and "spec.output.path" in r.stderr and "did not write (README.md)" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md"] and (out / "README.md").read_text() == "my notes"
