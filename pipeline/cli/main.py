"""The ``pipeline`` command: run jobs, show their status, train filter models, ablations.

Imports stay inside the subcommands: ``pipeline ablate train`` runs on a GPU machine that
has only torch, numpy and pyarrow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    """Run a job file with the job kind its ``job:`` key names (:mod:`pipeline.jobkinds`)."""
    from pipeline.core.config import JobConfigError, load_job_dict
    from pipeline.jobkinds import DEFAULT_KIND, get_job_kind

    try:
        data = load_job_dict(args.job)
        try:
            kind = get_job_kind(data.get("job", DEFAULT_KIND))
        except JobConfigError as e:
            raise JobConfigError(f"{args.job}: {e}") from None
        return kind.run(data, args)
    except JobConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConnectionError as e:
        print(
            f"error: cannot join the Ray cluster ({str(e).splitlines()[-1]}); check --address or "
            "RAY_ADDRESS, and for a cluster with token authentication set RAY_AUTH_MODE=token "
            "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN)",
            file=sys.stderr,
        )
        return 2


def _cmd_status(args: argparse.Namespace) -> int:
    """Print what a job's output folder holds; exit 2 when it holds no job."""
    from pipeline.execution.report import JobFolderError, job_status

    try:
        print(job_status(Path(args.outdir)))
    except JobFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    """Write ``report.html`` for an existing job output folder; exit 2 when it holds none."""
    from pipeline.execution.inspect import JobOutputError
    from pipeline.execution.report_html import write_html_report

    try:
        path = write_html_report(args.outdir, seed=args.seed)
    except JobOutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} (open it in a browser: file://{path.resolve()})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    """Print removed, changed and kept samples of a job output folder."""
    from pipeline.execution.inspect import JobOutputError, collect, render_text

    try:
        ins = collect(args.outdir, k=args.n, seed=args.seed, step=args.step, reason=args.reason)
    except JobOutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.step and args.step not in {s["name"] for s in ins.steps}:
        print(f"error: the job has no step {args.step!r}; its steps: "
              + ", ".join(s["name"] for s in ins.steps), file=sys.stderr)
        return 2
    if args.step:
        ins.steps = [s for s in ins.steps if s["name"] == args.step]
    print(render_text(ins, n=args.n))
    return 0


def _cmd_ablate_prepare(args: argparse.Namespace) -> int:
    from pipeline.core.config import JobConfigError, load_job_dict
    from pipeline.jobkinds.ablation import run_ablation

    try:
        return run_ablation(load_job_dict(args.job), args, train=False)
    except JobConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _cmd_ablate_train(args: argparse.Namespace) -> int:
    from pipeline.ablation.train import train_all

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    train_all(args.prepared, args.out, overrides, parallel=args.parallel)
    out = Path(args.out) if args.out else Path(args.prepared).parent
    print((out / "report.md").read_text(encoding="utf-8"))
    return 0


def _cmd_ablate_plan(args: argparse.Namespace) -> int:
    """Print the seeds and eval documents a design needs, from a finished pilot ablation."""
    from pipeline.ablation.report import render_plan

    record_path = Path(args.pilot) / "ablation.json"
    if not record_path.is_file():
        print(f"error: {record_path} does not exist; give the output folder of a finished "
              "`pipeline ablate train` (2+ seeds)", file=sys.stderr)
        return 2
    record = json.loads(record_path.read_text(encoding="utf-8"))
    print(render_plan(record, Path(args.pilot), args.effect))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    """Print the continuation of each ``--prompt`` by a trained checkpoint."""
    import torch

    from model.generate import generate_text, load_checkpoint, resolve_checkpoint, tokenizer_dir_of
    from tokenizer.encoder import Tokenizer

    try:
        ckpt = resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tok_dir = args.tokenizer or tokenizer_dir_of(ckpt)
    if not tok_dir:
        print(f"error: {ckpt} has no tokenizer recorded (data.tokenizer in the run's "
              "config.json); pass --tokenizer DIR", file=sys.stderr)
        return 2
    tok = Tokenizer.load(tok_dir)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_checkpoint(ckpt, device=device)
    if tok.vocab_size > model.config.vocab_size:
        print(f"error: tokenizer {tok_dir} has {tok.vocab_size} tokens, more than the model's "
              f"{model.config.vocab_size}", file=sys.stderr)
        return 2
    eos = None if args.no_eos else tok.special_tokens.get(args.eos)
    texts = generate_text(model, tok, args.prompt, args.max_new_tokens, args.temperature,
                          args.top_k, args.top_p, args.seed, eos, decode=args.decode,
                          num_beams=args.num_beams, length_penalty=args.length_penalty)
    for prompt, text in zip(args.prompt, texts, strict=True):
        print(prompt + text)
    return 0


def _register_optional(sub: argparse._SubParsersAction) -> None:
    """Add the filter-training commands (``lm``, ``classifier``, ``dsir``)."""
    from pipeline.cli.classifier import register as register_classifier
    from pipeline.cli.dsir import register as register_dsir
    from pipeline.cli.lm import register as register_lm

    for register in (register_lm, register_classifier, register_dsir):
        register(sub)


def build_parser(with_training_commands: bool = True) -> argparse.ArgumentParser:
    """Return the argument parser of the ``pipeline`` command."""
    from pipeline.jobkinds import job_kinds

    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job file (job: " + ", ".join(job_kinds()) + ")")
    run.add_argument("job", help="job YAML file")
    run.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    run.add_argument("--output", help="output folder (overrides the job's 'output')")
    run.set_defaults(func=_cmd_run)
    status = sub.add_parser("status", help="show what a job's output folder has done")
    status.add_argument("outdir")
    status.set_defaults(func=_cmd_status)
    inspect = sub.add_parser("inspect", help="write report.html for a job's output folder")
    inspect.add_argument("outdir")
    inspect.add_argument("--seed", type=int, default=0, help="seed of the document samples")
    inspect.set_defaults(func=_cmd_inspect)
    show = sub.add_parser("show", help="print sampled removed and kept documents of a job")
    show.add_argument("outdir")
    show.add_argument("--step", help="only this step (e.g. gopher_quality_v1)")
    show.add_argument("--reason", help="only this removal reason (e.g. gopher_short_doc)")
    show.add_argument("-n", type=int, default=3, help="documents per reason (default 3)")
    show.add_argument("--seed", type=int, default=0, help="seed of the document samples")
    show.set_defaults(func=_cmd_show)

    ablate = sub.add_parser("ablate", help="data ablations in two halves (CPU, then GPU)")
    ablate_sub = ablate.add_subparsers(dest="ablate_command", required=True)
    prep = ablate_sub.add_parser("prepare", help="filter and tokenize every arm (CPU machine)")
    prep.add_argument("job", help="ablation YAML file")
    prep.add_argument("--address", help="Ray cluster to join")
    prep.add_argument("--output", help="output folder (overrides the job's 'output')")
    prep.set_defaults(func=_cmd_ablate_prepare)
    train = ablate_sub.add_parser("train", help="train every arm and seed (GPU machine)")
    train.add_argument("prepared", help="the prepared folder written by `ablate prepare`")
    train.add_argument("--out", help="where runs and the report go (default: its parent)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a training option for every run, e.g. batch_size=32")
    train.add_argument("--parallel", type=int, default=1, metavar="N",
                       help="train N runs at once (separate processes sharing the GPU)")
    train.set_defaults(func=_cmd_ablate_train)
    plan = ablate_sub.add_parser("plan", help="seeds and eval documents needed, from a pilot")
    plan.add_argument("pilot", help="output folder of a finished pilot (holds ablation.json)")
    plan.add_argument("--effect", type=float, required=True,
                      help="effect to detect, in nats of validation loss (e.g. 0.02)")
    plan.set_defaults(func=_cmd_ablate_plan)

    sample = sub.add_parser("sample", help="continue a prompt with a trained checkpoint")
    sample.add_argument("checkpoint", help="train run out_dir, its checkpoints/ or a state.pt")
    sample.add_argument("--prompt", action="append", required=True,
                        help="text to continue (repeat for a batch)")
    sample.add_argument("--tokenizer", help="tokenizer directory (default: data.tokenizer "
                        "in the run's config.json)")
    sample.add_argument("--max-new-tokens", type=int, default=64)
    sample.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--eos", default="<|endoftext|>",
                        help="special token that ends a continuation")
    sample.add_argument("--no-eos", action="store_true", help="never stop early")
    sample.add_argument("--device", default="auto", help="cpu, cuda or auto")
    sample.add_argument("--num-beams", type=int, default=1,
                        help="beam search with this many beams (> 1; sampling options unused)")
    sample.add_argument("--length-penalty", type=float, default=1.0,
                        help="beam score = log-prob sum / new tokens ** this")
    sample.add_argument("--decode", default="eager",
                        choices=["eager", "static", "cuda_graph", "compiled"],
                        help="decoding mode: compiled = static KV cache + torch.compile + "
                             "CUDA graph (CUDA only)")
    sample.set_defaults(func=_cmd_sample)
    if with_training_commands:
        _register_optional(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pipeline`` console script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    # The GPU machine lacks the filters' dependencies; `ablate train` and `sample` must not
    # need them.
    light = bool(argv[:2] in (["ablate", "train"], ["ablate", "plan"]) or argv[:1] == ["sample"])
    args = build_parser(with_training_commands=not light).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # The executor has already cancelled its running tasks; finished parts are kept.
        print("interrupted: finished work is kept; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
