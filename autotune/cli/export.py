"""``autotune export`` and ``autotune confirm``: a trial's configuration, written out or
re-measured on fresh servers."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from autotune.cli.common import (
    SpaceFileOpt,
    SpaceShaOpt,
    StorageOpt,
    console,
    err_console,
    fail,
    storage_url,
    vouched_space,
)
from autotune.cli.render import confirm_table
from autotune.errors import AutotuneError


class ExportFormat(StrEnum):
    yaml = "yaml"
    command = "command"


TrialOpt = Annotated[int | None, typer.Option("--trial", help="trial number")]
PickOpt = Annotated[str | None, typer.Option("--pick", help="max:METRIC or min:METRIC")]


def _picked(name: str, storage: str | None, trial: int | None, pick: str | None) -> Any:
    from autotune.results import load_report, pick_trial
    from autotune.store import open_catalog

    if trial is not None and pick is not None:
        err_console.print("[bold red]error:[/] give --trial or --pick, not both")
        raise typer.Exit(2)
    url = storage_url(storage)
    try:
        report = load_report(open_catalog(url), name)
        return url, report, pick_trial(report, number=trial, pick=pick)
    except AutotuneError as exc:
        raise fail(exc) from None


def _confirm(url: str, name: str, record: Any, times: int, log_dir: Path | None,
             space: Path | None, space_sha256: str | None) -> Any:
    """Confirm on fresh servers, then keep the runs with the study (its noise model's
    evidence)."""
    from autotune.results import study_noise_model
    from autotune.settings import Settings
    from autotune.store import open_catalog, open_store
    from autotune.study.confirm import confirm_trial

    catalog = open_catalog(url)
    study = catalog.get_study(name)
    assert study is not None
    spec = vouched_space(study.space_yaml, name, space, space_sha256)
    console.print(f"confirming trial {record.number} of {name} on {times} fresh server(s) ...")
    # judged on the study's objectives too (a ladder's capacity), against the reported means
    result = confirm_trial(spec, record, times=times, noise=study_noise_model(catalog, name),
                           log_dir=(log_dir or Path(Settings().log_dir)) / name,
                           objectives=[o["metric"] for o in study.objectives])
    if result.runs:
        open_store(url, name).add_fresh_runs(result.fresh_runs())
    return result


def _interval_lines(url: str, name: str, record: Any) -> list[str]:
    from autotune.results import study_noise_model
    from autotune.store import open_catalog

    intervals = study_noise_model(open_catalog(url), name).intervals(record)
    return [f"# {i.level:.0%} fresh-server interval: {m} {i.text()} "
            f"({i.spread.describe()})" for m, i in intervals.items()]


def export(
    name: str,
    storage: StorageOpt = None,
    trial: TrialOpt = None,
    pick: PickOpt = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write to FILE")] = None,
    output_format: Annotated[
        ExportFormat, typer.Option("--format", help="yaml (for `vllm serve --config`; env.sh "
                                   "beside -o FILE when env vars were swept) or command "
                                   "(the whole command line)")
    ] = ExportFormat.yaml,
    confirm: Annotated[
        int, typer.Option("--confirm", help="first re-measure it on K fresh servers", min=0)
    ] = 0,
    log_dir: Annotated[Path | None, typer.Option(help="engine logs folder")] = None,
    space: SpaceFileOpt = None,
    space_sha256: SpaceShaOpt = None,
) -> None:
    """Write a trial's configuration as a YAML for `vllm serve --config`, with an env.sh beside
    it when the study swept environment variables, or as one command line (--format command).
    With --confirm, the stored engine command runs only if --space FILE or --space-sha256
    vouches for it."""
    from autotune.results import (
        command_line,
        env_script,
        export_yaml,
        stored_space,
        swept_env,
        trial_env,
    )
    from autotune.store import open_catalog

    url, report, record = _picked(name, storage, trial, pick)
    study = open_catalog(url).get_study(name)
    stored = stored_space(study.space_yaml) if study is not None else None
    if stored is None and study is not None and study.space_yaml.strip():
        err_console.print("[yellow]warning:[/] the study's stored space does not validate "
                          "with this autotune: the export carries no engine environment",
                          highlight=False)
    env = trial_env(stored, record)
    try:
        if output_format is ExportFormat.command:
            text = command_line(record, env) + "\n"
        else:
            text = export_yaml(report, record, env if swept_env(stored) else None)
    except AutotuneError as exc:
        raise fail(exc) from None
    if confirm:
        confirmation = _confirm(url, name, record, confirm, log_dir, space, space_sha256)
        text = "\n".join(confirmation.comment_lines()) + "\n" + text
    if output_format is ExportFormat.yaml:
        lines = text.split("\n")
        after = next((i for i, line in enumerate(lines) if line.startswith("# measured:")), 0)
        lines[after + 1:after + 1] = _interval_lines(url, name, record)
        text = "\n".join(lines)
    if output is None:
        sys.stdout.write(text)
        return
    written = [output]
    _write(output, text)
    if output_format is ExportFormat.yaml and swept_env(stored):
        written.append(output.with_name("env.sh"))
        try:
            script = env_script(report, record, env)
        except AutotuneError as exc:
            raise fail(exc) from None
        _write(written[-1], script)
    err_console.print(f"wrote trial {record.number} of {name} to "
                      + " and ".join(str(p) for p in written))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def confirm(
    name: str,
    storage: StorageOpt = None,
    trial: TrialOpt = None,
    pick: PickOpt = None,
    times: Annotated[int, typer.Option(help="fresh servers to measure on", min=1)] = 3,
    log_dir: Annotated[Path | None, typer.Option(help="engine logs folder")] = None,
    space: SpaceFileOpt = None,
    space_sha256: SpaceShaOpt = None,
) -> None:
    """Re-measure a trial's configuration on fresh servers: does the study's figure hold?
    The stored engine command runs only if --space FILE or --space-sha256 vouches for it."""
    url, _, record = _picked(name, storage, trial, pick)
    result = _confirm(url, name, record, times, log_dir, space, space_sha256)
    console.print(confirm_table(name, record.number, result))
    for line in result.comment_lines():
        console.print(escape(line.lstrip("# ")))
    console.print("the study keeps these runs; its intervals for this trial now:")
    for line in _interval_lines(url, name, record):
        console.print(escape(line.lstrip("# ")))
    if not result.holds:
        raise typer.Exit(3)
