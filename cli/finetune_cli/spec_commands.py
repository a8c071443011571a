"""`finetune validate` and `finetune explain`: is this job ready to run, before any GPU hour is spent?

`validate` checks what it can reach, the same way and with the same messages as `finetune run` (it calls the
same functions), and lists every problem at once, each with the file and line of the field at fault:
- the spec, as strictly as the API server (finetune_api.loading);
- the output folder: writable, the run's own, not the model's or a data folder (output_dir.check_output);
- the model folder: config.json with the shape the plan needs, the LoRA rank against it; then (slow) the
  tokenizer, the chat template, the target modules on an empty copy of the architecture, and the launch plan on
  this machine (QLoRA without a GPU, flash attention on a CPU, nothing fits);
- the data: every file, and (slow) every row read and encoded with the model's tokenizer and template, and
  enough examples for one optimizer step.
`--skip-model` and `--skip-data` leave out the slow parts (then torch is never imported: well under a second).
A spec that keeps its model, data or output on volumes is a cluster spec: its paths exist only in the pods, so it
is checked the way the operator renders it (`--cluster` asks for that explicitly).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

from finetune_api.contract import UserError
from finetune_api.loading import SpecSource, load_job_source

MAX_LISTED = 20  # bad data lines listed; the count says how many more


class NotReady(UserError):
    """A valid spec that cannot run here as written; one located line per problem."""

    def __init__(self, spec: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{spec} cannot run as written:\n  " + "\n  ".join(problems))


def cmd_validate(args) -> int:
    """Check a FineTuneJob file and what it points at; errors name the file, line and field."""
    job, src = load_job_source(args.spec)
    s = job.spec
    head = (f"{args.spec}: valid FineTuneJob '{job.metadata.name}' ({s.method.type} + {s.objective.type}, "
            f"{s.dataset.format} data)")
    uses_volumes = any(v is not None for v in (s.model.volume, s.dataset.volume, s.output.volume))
    if getattr(args, "cluster", False) or uses_volumes:
        checked = _cluster_checks(job, src, args.spec)
    else:
        checked = _local_checks(job, src, args)
    print(head + (":" if checked else ""))
    for line in checked:
        print(f"  ok  {line}")
    return 0


def _cluster_checks(job, src: SpecSource, spec: str) -> list[str]:
    """What the operator checks when it renders the job's pods (paths inside volumes, pod settings)."""
    from finetune_operator.render import render_children

    try:
        render_children(job, uid="00000000-0000-0000-0000-000000000000")
    except UserError as e:
        raise NotReady(spec, [src.locate(p) for p in getattr(e, "problems", [str(e)])]) from None
    return ["rendered as the operator renders it (its paths are inside the pods' volumes, so the files are not "
            "checked here)"]


class _Checks:
    """Runs each check, keeping every problem (located at its field) instead of stopping at the first."""

    def __init__(self, src: SpecSource):
        self.src = src
        self.problems: list[str] = []
        self.done: list[str] = []

    def run(self, what: str, check: Callable[[], Optional[str]]) -> bool:
        try:
            note = check()
        except UserError as e:
            self.problems += [self.src.locate(p) for p in getattr(e, "problems", [str(e)])]
            return False
        self.done.append(f"{what}: {note}" if note else what)
        return True


def _local_checks(job, src: SpecSource, args) -> list[str]:
    from finetune_trainer.local_run import resolve_paths

    c = _Checks(src)
    cfg = None

    def paths():
        nonlocal cfg
        cfg = resolve_paths(job, Path(args.spec))

    if not c.run("paths", paths) or not cfg:
        raise NotReady(args.spec, c.problems)
    from finetune_trainer.output_dir import check_output

    c.run("output folder", lambda: check_output(cfg) or (f"{cfg.output_dir} (" + (
        "holds this job's earlier run)" if Path(cfg.output_dir).is_dir() and any(Path(cfg.output_dir).iterdir())
        else "new)")))
    model_ok = c.run("model config", lambda: _model_config(cfg))
    data_ok = c.run("data files", lambda: _data_files(cfg))
    state: dict = {}
    if not args.skip_model and model_ok:
        model_ok = c.run("model", lambda: _model(cfg, Path(args.spec), state))
    if not args.skip_data and data_ok:
        c.run("data", lambda: _data(cfg, state, c))
    if c.problems:
        raise NotReady(args.spec, c.problems)
    skipped = [f"--skip-{k}" for k in ("model", "data") if getattr(args, f"skip_{k}")]
    return c.done + ([f"(not checked: {', '.join(skipped)})"] if skipped else [])


def _model_config(cfg) -> Optional[str]:
    """config.json read and its shape known (no torch); the LoRA rank checked against it."""
    if cfg.model_path is None:
        return "hub model: read at run time"
    from finetune_plan import ModelShape
    from finetune_trainer.capabilities import check_lora_rank
    from finetune_trainer.errors import ModelLoadError
    from finetune_trainer.modeling import model_config

    if not Path(cfg.model_path).is_dir():
        raise ModelLoadError(f"spec.model.path '{cfg.model_path}': no such directory")
    config = model_config(cfg)  # ModelLoadError names a missing or unreadable config.json
    try:
        shape = ModelShape.from_config(config)
    except (KeyError, TypeError, ZeroDivisionError) as e:
        why = f"has no {e.args[0]!r}" if isinstance(e, KeyError) else f"is not a causal LM's config ({e})"
        raise ModelLoadError(f"spec.model.path '{cfg.model_path}': its config.json {why}, which the launch plan "
                             "needs") from None
    check_lora_rank(cfg, shape.linears())
    return f"{shape.layers} layers, hidden size {shape.hidden}"


def _data_files(cfg) -> Optional[str]:
    """Every data path names readable files (no row read yet)."""
    if cfg.dataset_paths is None:
        return "hub dataset: read at run time"
    from finetune_trainer.data import DataError
    from finetune_trainer.data.files import jsonl_files

    n, bad = 0, []
    for field, paths in (("spec.dataset.paths", cfg.dataset_paths), ("spec.dataset.validationPaths",
                                                                      cfg.validation_paths)):
        for i, p in enumerate(paths or []):
            try:
                n += len(jsonl_files(Path(p)))
            except DataError as e:
                bad.append(f"{field}[{i}]: {e}")
    if bad:
        raise NotReady("data", bad)
    return f"{n} file(s)"


def _model(cfg, spec_file: Path, state: dict) -> str:
    """The launch plan on this machine, the tokenizer, the chat template and the target modules (no weights)."""
    from finetune_trainer.data.chat import resolve_template
    from finetune_trainer.local_run import plan_local
    from finetune_trainer.modeling import check_targets, load_tokenizer, meta_model

    planned = plan_local(cfg.job, spec_file)
    state["plan"] = planned.plan
    tokenizer = load_tokenizer(cfg)
    state["tokenizer"] = tokenizer
    state["template"] = resolve_template(tokenizer, cfg.job.spec.dataset.chat_template)
    check_targets(meta_model(cfg), cfg)
    p = planned.plan
    return (f"tokenizer, chat template, target modules; launch plan here: {p.world_size} {p.device.upper()} "
            f"process(es), strategy {p.strategy}")


def _data(cfg, state: dict, c: _Checks) -> Optional[str]:
    """Every row read (and, with the tokenizer, encoded) exactly as `finetune run` does; every bad row listed."""
    from finetune_trainer.data import DataReport, split_validation
    from finetune_trainer.data.encoding import encode
    from finetune_trainer.data.files import read_hub, read_paths

    ds = cfg.job.spec.dataset
    bad: list = []
    if ds.hub_id:
        records = read_hub(ds.hub_id, ds.hub_split, ds.format)
    else:
        records = read_paths(cfg.dataset_paths, ds.format, Path("/"), bad)
    held = read_paths(cfg.validation_paths, ds.format, Path("/"), bad) if cfg.validation_paths else []
    if not bad and ds.validation_split:
        records, held = split_validation(records, ds.validation_split, cfg.job.spec.training.seed)
    tokenizer = state.get("tokenizer")
    report = DataReport(ds.max_length, ds.too_long)
    train: list = []
    if tokenizer is not None:
        options = dict(max_length=ds.max_length, too_long=ds.too_long, objective=cfg.job.spec.objective.type,
                       template=state["template"])
        for part, rows in ((train, records), (None, held)):
            for r in rows:
                try:
                    ex = encode(r, tokenizer, report=report if part is not None else None, **options)
                except UserError as e:
                    bad.append(e)
                    continue
                if part is not None and ex is not None:
                    part.append(ex)
    if bad:
        more = f"... and {len(bad) - MAX_LISTED} more bad line(s)" if len(bad) > MAX_LISTED else None
        raise NotReady("data", [str(e) for e in bad[:MAX_LISTED]] + ([more] if more else []))
    if tokenizer is None:
        return f"{len(records)} examples read; not encoded (--skip-model)"
    if not train:
        from finetune_trainer.data import DataError

        raise DataError(records[0].file if records else "dataset", None,
                        f"no training example is left: {report.summary()}")
    if ds.packing:
        from finetune_trainer.data import pack_examples

        train = pack_examples(train, ds.max_length, cfg.job.spec.training.seed)
    if "plan" in state:
        from finetune_trainer.recipe import check_enough_data

        check_enough_data(len(train), state["plan"])
    return report.summary().rstrip(".")


def cmd_explain(args) -> int:
    """Print the reference of one field (the same text as `kubectl explain`)."""
    from finetune_api.explain import UnknownField, explain

    try:
        print(explain(args.field or ""))
    except UnknownField as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    return 0
