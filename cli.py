"""Command-line entry points: avsuperb-extract, -probe, -demo, -report and -analyze.

Errors a user can cause print one line and exit with code 2; nothing is written for them.
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

TRACK_CHOICE = click.Choice(["audio", "video", "fusion"])
log = logging.getLogger("avsuperb")


# Exception types that mean bad input, not a bug: (module, name). A module that raised one is
# already imported, so nothing is imported here (the probe must not load the extract stage).
USER_ERRORS = (
    ("avsuperb.probe.config", "ConfigError"),
    ("avsuperb.probe.tasks.base", "TaskError"),
    ("avsuperb.store.backend", "StoreError"),
    ("avsuperb.report.leaderboard", "ReportError"),
    ("avsuperb.extract.datasets.base", "DatasetError"),
    ("avsuperb.extract.run", "ExtractError"),
    ("avsuperb.extract.upstreams.base", "UpstreamError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    return tuple(getattr(sys.modules[m], name) for m, name in USER_ERRORS if m in sys.modules)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM outside extraction's own handling (start-up, exit) ends the way Ctrl-C does


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while a stage's modules import. torch runs Python callbacks from C++
    while it initialises, and a KeyboardInterrupt raised inside one aborts the process (SIGABRT, no
    message) instead of ending it cleanly; a signal that arrives meanwhile is delivered as the block
    ends, where it ends the command the usual way (one line, exit code 130)."""
    held = {signal.SIGTERM, signal.SIGINT}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _main(command: click.Command, prog: str) -> Callable[[], None]:
    def entry() -> None:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            code = command.main(prog_name=prog, standalone_mode=False)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"{prog}: error: {e.format_message()}", err=True)
            sys.exit(2)
        except (click.Abort, KeyboardInterrupt):
            click.echo(f"{prog}: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - user errors are one line, anything else is a bug
            if isinstance(e, _user_errors()):
                click.echo(f"{prog}: error: {e}", err=True)
                sys.exit(2)
            raise
        sys.exit(code or 0)

    return entry


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)


# ----------------------------------------------------------------------------------- extract
def _model_help() -> str:
    from avsuperb.extract import upstreams

    return ", ".join(upstreams.available()) + "; or a plug-in: module.path:factory or path/to/file.py:factory"


def _dataset_help() -> str:
    from avsuperb.extract import datasets

    return ", ".join(datasets.available())


class _LazyHelp(click.Command):
    """Fills the model and dataset names into --help from the registries."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for p in self.params:
            if p.name == "model":
                p.help = f"Upstream model: {_model_help()}."
            elif p.name == "dataset":
                p.help = f"Dataset: {_dataset_help()}."
        super().format_help(ctx, formatter)


def _list_datasets(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from avsuperb.extract import datasets

    for name in datasets.available():
        cls = datasets.REGISTRY[name]
        click.echo(f"{name}  [tasks: {', '.join(cls.tasks) or '-'}]")
        click.echo(f"    {cls.description}")
        for line in cls.layout.splitlines():
            click.echo(f"    {line}")
        click.echo("")
    ctx.exit(0)


def _parse_shard(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """'K/N' (1-based) -> (K - 1, N)."""
    if value is None:
        return None
    k, sep, n = value.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise click.BadParameter(f"expected K/N with 1 <= K <= N, e.g. 1/4; got {value!r}")
    return int(k) - 1, int(n)


def _parse_max_failures(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | float | None:
    """'N' -> a count of failed clips (int); '0.1' or '10%' -> a fraction of the clips processed (float)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        limit = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        limit = -1.0
    if not 0.0 <= limit <= 1.0:  # NaN too
        raise click.BadParameter(f"expected a count of failed clips (e.g. 50) or a fraction of the clips processed "
                                 f"(e.g. 0.1 or 10%, at most 100%); got {value!r}")
    return limit


def _list_models(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from avsuperb.extract.upstreams.plugins import catalogue, describe_tracks

    for m in catalogue():
        click.echo(f"{m.name:10s} {describe_tracks(m.tracks) if m.tracks is not None else m.note}  [{m.source}]")
        if m.summary:
            click.echo(f"{'':10s} {m.summary}")
    click.echo("\nOr a plug-in of your own: --model module.path:factory or --model path/to/file.py:factory "
               "(entry points: group avsuperb.upstreams).")
    ctx.exit(0)


@click.command(cls=_LazyHelp, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--list-datasets", is_flag=True, expose_value=False, is_eager=True, callback=_list_datasets,
              help="Show each dataset, the tasks it serves and the files it expects under --root, then exit.")
@click.option("--list-models", is_flag=True, expose_value=False, is_eager=True, callback=_list_models,
              help="Show the upstream models (built-in and installed plug-ins) and what each offers, then exit.")
@click.option("--model", required=True, help="Upstream model.")
@click.option("--dataset", required=True, help="Dataset.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset directory (synthetic: where to render it; default: the user cache).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Store to write: NAME.zarr (Zarr v3) or NAME.h5 (HDF5). Re-running the same command resumes it.")
@click.option("--track", "tracks", multiple=True, type=TRACK_CHOICE, help="Track to extract (repeatable; default: every track the model offers).")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), help="Local model weights (neural upstreams).")
@click.option("--device", default="cpu", show_default=True, help="Torch device: cpu or cuda[:N].")
@click.option("--frames/--no-frames", default=None, help="Also store frame-level features (default: on where the dataset has transcripts, for ASR).")
@click.option("--block-size", type=click.IntRange(min=1), help="Clips per unit of writing (default: chosen from the feature size).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Clips per model forward. Neural upstreams pad and mask, so a clip's features do not depend on its batch.")
@click.option("--video-crop", type=click.Choice(["center", "mouth"]),
              help="av_hubert only: its 88x88 video input from the frame centre (the reference) or around the mouth found "
                   "by a face-landmark model (needs the optional extra: pip install --no-deps facenet-pytorch==2.6.0). "
                   "Default: the model's own (center).")
@click.option("--decode-workers", type=click.IntRange(min=0),
              help="Processes decoding clips ahead of the model; 0: one thread of this process does. "
                   "Default: 0 when only audio is decoded (a thread hides it entirely), 2 when video is.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Model arithmetic: fp32, or autocast to fp16 (CUDA) / bf16; recorded in the store.")
@click.option("--shard", callback=_parse_shard, metavar="K/N",
              help="Extract only part K of N (1-based) into the same .zarr store; run N of these at once, on one "
                   "machine or several sharing the filesystem. Whichever finishes last completes the store.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the shards as tasks on this Dask distributed scheduler (e.g. tcp://10.0.0.5:8786); its workers "
                   "must see the dataset and the store's folder.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Without --scheduler: start a local Dask cluster of this many worker processes, one shard each.")
@click.option("--max-failures", callback=_parse_max_failures, metavar="N|FRACTION",
              help="Stop (resumably, exit code 2) once the clips failed in this run exceed N, or a fraction (0.1 or 10%) "
                   "of the clips processed in this run, judged from 20 processed clips on. Default: no limit.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def extract_cmd(model: str, dataset: str, root: Path | None, out: Path, tracks: tuple[str, ...], checkpoint: Path | None,
                device: str, frames: bool | None, block_size: int | None, batch_size: int, video_crop: str | None,
                decode_workers: int | None, precision: str,
                shard: tuple[int, int] | None, scheduler: str | None, workers: int | None,
                max_failures: int | float | None, no_progress: bool, verbose: bool) -> int:
    """Run an upstream once over every clip of a dataset and store every layer of every track.

    \b
    Example:
      avsuperb-extract --model fbank --dataset synthetic --out fbank-synthetic.zarr
    """
    _logging(verbose)
    with _signals_held():
        from avsuperb.extract.run import ExtractOptions, run_extraction

    opts = ExtractOptions(
        model, dataset, out, root, tracks, checkpoint, device, frames, block_size, not no_progress, batch_size,
        decode_workers=decode_workers, precision=precision, shard=shard or (0, 1), model_options={"video_crop": video_crop} if video_crop else {},
        max_failures=max_failures,
    )
    if scheduler or workers:
        if shard:
            raise click.UsageError("--shard picks one part for this process; with --scheduler/--workers every part runs as a task")
        from avsuperb.extract.cluster import run_on_cluster

        summaries = run_on_cluster(opts, scheduler, workers)
        for summary in summaries:
            log.info(summary.line())
        for summary in summaries:  # --max-failures counts per shard
            if summary.stopped:
                click.echo(f"avsuperb-extract: shard {summary.shard[0] + 1}/{summary.shard[1]}: {summary.stopped}", err=True)
        return 2 if any(s.stopped for s in summaries) else 0
    summary = run_extraction(opts)
    log.info(summary.line())
    if summary.stopped:
        click.echo(f"avsuperb-extract: {summary.stopped}", err=True)
        return 2
    return 130 if summary.interrupted else 0


# ------------------------------------------------------------------------------------- probe
class _TaskHelp(click.Command):
    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from avsuperb.probe import tasks

        for p in self.params:
            if p.name == "task":
                p.help = "Task: " + "; ".join(f"{t} ({tasks.get(t).description})" for t in tasks.available()) + "."
        super().format_help(ctx, formatter)


@click.command(cls=_TaskHelp, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--cache", required=True, type=click.Path(path_type=Path), help="Store written by avsuperb-extract (.zarr or .h5).")
@click.option("--task", required=True, help="Task.")
@click.option("--track", type=TRACK_CHOICE, help="Track to probe (default: every track in the store).")
@click.option("--out", type=click.Path(path_type=Path), help="Result directory (default: results/UPSTREAM-DATASET/TASK-TRACK); result.json goes there.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override the training config (probe/configs/TASK[-DATASET].toml), e.g. --set steps=2000 --set lrs=1e-2,1e-3.")
@click.option("--seed", type=int, help="Seed for initialisation, batching and carved dev splits (default: the config's, 0).")
@click.option("--device", help="Torch device (default: cuda if available, else cpu).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def probe_cmd(cache: Path, task: str, track: str | None, out: Path | None, overrides: tuple[str, ...], seed: int | None,
              device: str | None, no_progress: bool, verbose: bool) -> int:
    """Train the task's head on the store's layers, sweeping learning rates 1e-1 ... 1e-5.

    The rate is chosen on dev and the test score is that rate's. Writes result.json and prints a table.

    \b
    Example:
      avsuperb-probe --cache fbank-synthetic.zarr --task er
    """
    _logging(verbose)
    from avsuperb.probe import tasks
    from avsuperb.probe.config import load_config

    spec = tasks.get(task)  # cheap checks first: the import below loads torch
    settings = list(overrides) + ([f"seed={seed}"] if seed is not None else [])
    load_config(task, None, settings)
    with _signals_held():
        from avsuperb.probe.run import default_device, open_for_task, resolve_tracks, run_probe

    if device and device.startswith("cuda") and default_device() != "cuda":
        raise click.UsageError(f"--device {device} asked for, but torch sees no CUDA device here; use --device cpu")
    reader = open_for_task(cache, spec)
    try:
        chosen = resolve_tracks(reader, track)
        cfg = load_config(task, reader.dataset, settings)
        name = f"{reader.upstream['name']}-{reader.dataset}"
        for t in chosen:
            base = out if out is not None else Path("results") / name
            out_dir = base if (out is not None and len(chosen) == 1) else base / f"{task}-{t}"
            result = run_probe(cache, task, t, cfg, out_dir, progress=not no_progress, reader=reader, device=device)
            click.echo(format_result(result))
            click.echo(f"wrote {out_dir / 'result.json'}")
    finally:
        reader.close()
    return 0


def format_result(r: dict[str, Any]) -> str:
    metric = r["metric"]["name"]
    head = f"{r['task']} on {r['dataset']} · {r['upstream']['name']} · {r['track']} track"
    dev_name = "dev (100 - CER)" if metric == "cer" else f"dev {metric}"
    lines = [head, f"  {'lr':>8}  {dev_name}"]
    for lr, score in r["dev_scores"].items():
        mark = "  <- chosen" if float(lr) == r["chosen_lr"] else ""
        lines.append(f"  {lr:>8}  {score:7.2f}{mark}")
    arrow = "↑" if r["metric"]["higher_is_better"] else "↓"
    lines.append(f"  test {metric} % {arrow} (lr {r['chosen_lr']:g}): {r['test_score']:.2f}")
    if r.get("layer_contributions"):
        lines.append("  layer contributions: " + " ".join(f"{c:.2f}" for c in r["layer_contributions"]))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- demo
@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--workdir", default=Path("avsuperb-demo"), show_default=True, type=click.Path(path_type=Path), help="Where stores and results go.")
@click.option("--root", type=click.Path(path_type=Path), help="Where the synthetic corpus is rendered (default: the user cache).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override the probes' training config.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def demo_cmd(workdir: Path, root: Path | None, overrides: tuple[str, ...], no_progress: bool) -> int:
    """Extract the synthetic corpus with FBANK and HoG, probe every task on each track, print a table."""
    _logging(False)
    with _signals_held():
        from avsuperb.demo import run_demo

    click.echo(run_demo(workdir, root, list(overrides), progress=not no_progress))
    return 0


# ------------------------------------------------------------------------- report / analyze
RESULTS_ARG = click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@RESULTS_ARG
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory for leaderboard.md and leaderboard.csv.")
def report_cmd(results: tuple[Path, ...], out: Path) -> int:
    """Collect result.json files (or folders holding them) into the paper's Table 1: rows by track
    and upstream, one column per dataset, and the overall score (mean of the 7 task scores, CER and
    EER entered as 100 - value) for complete rows."""
    _logging(False)
    from avsuperb.report.leaderboard import build, collect, to_markdown, write

    board = build(collect(list(results)))
    click.echo(to_markdown(board))
    for path in write(board, out):
        click.echo(f"wrote {path}")
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@RESULTS_ARG
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory for layer_contributions.json and .png.")
def analyze_cmd(results: tuple[Path, ...], out: Path) -> int:
    """Layer contributions of saved results (softmax weight x the layer's mean L2 norm over the
    training set, from each result's store), as JSON and a heatmap PNG; nothing is retrained."""
    _logging(False)
    from avsuperb.report.analyze import run_analyze

    for path in run_analyze(list(results), out):
        click.echo(f"wrote {path}")
    return 0


extract_main = _main(extract_cmd, "avsuperb-extract")
probe_main = _main(probe_cmd, "avsuperb-probe")
demo_main = _main(demo_cmd, "avsuperb-demo")
report_main = _main(report_cmd, "avsuperb-report")
analyze_main = _main(analyze_cmd, "avsuperb-analyze")
