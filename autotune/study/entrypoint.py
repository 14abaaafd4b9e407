"""The library entry point of a study: ``run_study`` runs one (``autotune study start`` and
``autotune worker`` are thin layers over it), ``create_study`` records one without running it.

Both take a loaded :class:`~autotune.space.model.Space` (or the path of its YAML file), a
storage URL and the run's options, print nothing (what a running study has to say goes to the
``reporter``) and raise the library's own errors (``AutotuneError``, ``NoDevicesError``,
``ValueError`` for a bad device spec); rendering and exit codes are the CLI's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.devices import DevicePool
from autotune.space import Space
from autotune.study.reporter import SilentReporter, StudyReporter
from autotune.study.runner import StudyRun, StudyRunner

if TYPE_CHECKING:
    from autotune.results import StudyReport
    from autotune.settings import Settings
    from autotune.trial import TrialRunner

SpaceSource = Space | str | os.PathLike[str]


@dataclass(frozen=True)
class StudyResult:
    """What ``run_study`` did: the run here, the devices it ran on and the study's report
    (every trial of the study, this run's and earlier ones', with its Pareto front)."""

    run: StudyRun
    storage: str
    hardware: str  # the pool, described (``CPU, 2 core(s), 1 engine slot``)
    stuck_devices: list[int]  # devices whose memory was never released
    report: StudyReport

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def interrupted(self) -> bool:
        return self.run.interrupted


def load_study_space(path: str | os.PathLike[str], *, check: bool = True) -> Space:
    """The space at ``path``; with ``check``, its model path, data files and engine flags are
    checked too (skip them for a study made for workers elsewhere, which may name a path only
    they hold). Raises ``SpaceError``."""
    from autotune.space import load_space

    space = load_space(path)
    if check:
        check_here(space, path)
    return space


def check_here(space: Space, path: str | os.PathLike[str] | None = None, *,
               text: str | None = None, label: str = "", flags: bool = True) -> None:
    """Check that this machine can run the space's trials, as ``study start`` does before
    anything is written: its model path, its data files (every line read, as a run reads
    them; lengths against the context) and, with ``flags``, its engine flags (the engine is
    asked for its options, cached). Raises ``SpaceError`` naming file, field and line.

    ``path``: the space file (its lines are named). Without one (a worker that pinned the
    stored space's hash), ``text`` (the space as stored with the study; default: ``space``
    dumped) is read from a temporary file and the refusal names ``label`` instead."""
    from autotune.bench.datasets import data_problem
    from autotune.engines.vllm_flags import check_space_flags
    from autotune.errors import SpaceError
    from autotune.space import check_data_files, check_model_path

    def check(file: str | os.PathLike[str]) -> None:
        check_model_path(space, file)
        check_data_files(space, file, read=data_problem)
        if flags:
            check_space_flags(space, file)

    if path is not None:
        check(path)
        return
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="autotune-space-") as folder:
        file = Path(folder) / "space.yaml"
        file.write_text(text if text is not None
                        else yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False),
                        encoding="utf-8")
        try:
            check(file)
        except SpaceError as exc:
            raise SpaceError(label or "the study's stored space", exc.problems) from None


def host_problem(space: Space, text: str | None, label: str) -> str | None:
    """Why this machine can no longer run the space's trials (its model path or a data file
    gone or changed), or None: asked after a trial failed, whose failure is then this host's,
    not its configuration's. ``text``: the space as stored with the study."""
    from autotune.errors import SpaceError

    try:
        check_here(space, text=text, label=label, flags=False)
    except SpaceError as exc:
        return f"{exc.path}: " + "; ".join(f"{where}: {why}" for where, why in exc.problems)
    return None


def device_pool(space: Space, devices: str | None = None, *,
                parallel: int | None = 1) -> DevicePool:
    """The pool of ``devices`` (auto, cpu, cpu:CORES, gpu, gpu:INDICES), or of the space's
    ``engine.devices`` detected, sized for ``parallel`` trials at once (None: as many as fit).
    Raises ``ValueError`` on a bad spec, ``NoDevicesError`` when no device is there."""
    from autotune.devices import detect_pool, pool_from_spec
    from autotune.devices.cpu import parse_bytes

    kv_bytes = parse_bytes(space.engine.flags.get("kv_cache_memory_bytes")
                           or space.engine.flags.get("kv-cache-memory-bytes"))
    if devices is not None:
        return pool_from_spec(devices, parallel=parallel, kv_cache_bytes=kv_bytes)
    return detect_pool(space.engine.devices, parallel=parallel, kv_cache_bytes=kv_bytes)


def slots_for(pool: DevicePool, parallel: int | None) -> int:
    """How many trials run at once: ``parallel`` (None: as many as the pool has slots), at most
    the pool's slots."""
    return pool.slots if parallel is None else min(parallel, pool.slots)


def create_study(
    space: SpaceSource,
    storage: str,
    *,
    name: str | None = None,
    trials: int | None = None,
    devices: DevicePool | str | None = None,
    log_dir: Path | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    reporter: StudyReporter | None = None,
    space_path: str | None = None,
    space_yaml: str | None = None,
    settings: Settings | None = None,
    accept_space_change: bool = False,
) -> str:
    """Create (or resume) the study ``name`` in ``storage`` with a budget of ``trials``
    (default: the space's ``search.trials``) and record it, running nothing: workers run it
    (``autotune worker``). Returns the study's name. A study that exists is resumed only if
    its stored space differs from ``space`` in nothing that can alter a measurement, or with
    ``accept_space_change`` (else ``SpaceChanged``, exit 2, naming the differences)."""
    spec, space_path, space_yaml = _space(space, space_path, space_yaml, check=False)
    study_name = name or spec.name or Path(space_path or "study").stem
    pool = device_pool(spec, devices) if devices is None or isinstance(devices, str) else devices
    runner = _runner(spec, name=study_name, storage=storage, pool=pool, log_dir=log_dir,
                     space_path=space_path, space_yaml=space_yaml, warm_start=warm_start,
                     reporter=reporter or SilentReporter(), settings=settings,
                     accept_space_change=accept_space_change)
    runner.prepare(budget=trials or spec.search.trials)
    return study_name


def run_study(
    space: SpaceSource,
    storage: str,
    *,
    name: str | None = None,
    trials: int | None = None,
    timeout_s: float | None = None,
    parallel: int | None = 1,
    devices: DevicePool | str | None = None,
    log_dir: Path | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    reporter: StudyReporter | None = None,
    join: bool = False,
    max_trials_here: int | None = None,
    space_path: str | None = None,
    space_yaml: str | None = None,
    settings: Settings | None = None,
    trial_runner: TrialRunner | None = None,
    confirm_stage: bool | None = None,
    accept_space_change: bool = False,
) -> StudyResult:
    """Run the study ``name`` (default: the space's name, else its file's stem) in the
    database at ``storage``: create it, or resume it when it exists, and run trials until it
    holds ``trials`` finished ones (default: the space's ``search.trials``) or ``timeout_s``
    passes (default: the space's ``search.timeout_s``), ``parallel`` at once (None: as many
    as the devices allow), each on its own devices.

    ``space``: a loaded space, or the path of its YAML file (loaded and checked: model path,
    data files, engine flags). ``devices``: a pool, or a spec (auto, cpu, cpu:CORES, gpu,
    gpu:INDICES); None: the space's ``engine.devices``. ``log_dir``: engine logs (default: the
    settings' ``log_dir``). ``warm_start``: configurations queued right after the default
    trial when the study is created. ``join``: join a study someone else created (a worker):
    its recorded budget holds, ``trials`` is ignored and no ``timeout_s`` default applies.
    ``max_trials_here``: run at most this many trials in this process. ``trial_runner``: runs
    each trial (default: the space's engine on the pool); a replay's, for instance.
    ``confirm_stage``: False skips the confirm stage (None: as the space's
    ``search.confirm_stage`` says); its engine starts count in ``trials``.
    ``accept_space_change``: resume the study even though its stored space differs from
    ``space`` in what can alter a measurement (else ``SpaceChanged``, exit 2, naming the
    differences; changes of ``search`` and the name are always accepted).

    A failed trial whose failure this machine explains (its model path or a data file gone:
    ``host_problem``) is queued again for another worker and this process stops claiming:
    the result's ``run.host_problem`` says why.

    Ctrl-C/SIGTERM tears every engine down: the result says ``interrupted`` and the trial that
    was cut short is queued again. Raises ``AutotuneError`` (a bad space, an unusable storage,
    the demo model not built), ``NoDevicesError`` and ``ValueError`` (a bad device spec)."""
    spec, space_path, space_yaml = _space(space, space_path, space_yaml, check=True)
    study_name = name or spec.name or Path(space_path or "study").stem
    if devices is None and trial_runner is not None:
        pool = trial_runner.pool
    elif devices is None or isinstance(devices, str):
        pool = device_pool(spec, devices, parallel=parallel)
    else:
        pool = devices
    reporter = reporter or SilentReporter()
    runner = _runner(spec, name=study_name, storage=storage, pool=pool, log_dir=log_dir,
                     space_path=space_path, space_yaml=space_yaml, warm_start=warm_start,
                     reporter=reporter, settings=settings, trial_runner=trial_runner,
                     accept_space_change=accept_space_change)
    if trial_runner is None:  # this machine's engine: a failed trial may be this host's fault
        label = f"the space of study {study_name!r}"
        runner.host_check = lambda: host_problem(spec, space_yaml, label)
    slots = slots_for(pool, parallel)
    if join:
        run = runner.run(parallel=slots, timeout_s=timeout_s, register=False,
                         max_trials_here=max_trials_here, confirm_stage=confirm_stage)
    else:
        run = runner.run(n_trials=trials or spec.search.trials,
                         timeout_s=timeout_s or spec.search.timeout_s, parallel=slots,
                         max_trials_here=max_trials_here, confirm_stage=confirm_stage)
    from autotune.results import load_report
    from autotune.store import open_catalog

    return StudyResult(run=run, storage=storage, hardware=pool.describe(),
                       stuck_devices=pool.stuck(),
                       report=load_report(open_catalog(storage), study_name))


def _space(space: SpaceSource, space_path: str | None, space_yaml: str | None, *,
           check: bool) -> tuple[Space, str, str | None]:
    """The space, the path it is recorded under and its YAML text (None: dumped from it)."""
    if isinstance(space, Space):
        return space, space_path or "", space_yaml
    from autotune.space import read_text

    path = os.fspath(space)
    return (load_study_space(path, check=check), space_path or path,
            space_yaml if space_yaml is not None else read_text(path))


def _runner(spec: Space, *, name: str, storage: str, pool: DevicePool, log_dir: Path | None,
            space_path: str, space_yaml: str | None, warm_start: Sequence[Mapping[str, Any]],
            reporter: StudyReporter, settings: Settings | None,
            trial_runner: TrialRunner | None = None,
            accept_space_change: bool = False) -> StudyRunner:
    """A StudyRunner for this process (the storage's single writer when it must be one),
    building the demo model first if the space asks for it."""
    from autotune.engines import create
    from autotune.settings import Settings
    from autotune.store.connection import claim_single_writer

    claim_single_writer(storage)
    if spec.model.build_demo:
        from autotune.model import build_demo_model, is_built

        if not is_built(spec.model.resolved_path):
            reporter.notice(f"building the demo model at {spec.model.resolved_path} ...")
            build_demo_model(spec.model.resolved_path)
    settings = settings or Settings()
    launcher = trial_runner.launcher if trial_runner is not None else create(spec.engine.kind)
    return StudyRunner.create(
        spec, name=name, storage=storage, launcher=launcher, pool=pool,
        log_dir=log_dir or Path(settings.log_dir), runner=trial_runner,
        space_path=space_path, space_yaml=space_yaml, reporter=reporter,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        grace_period_s=settings.grace_period_s, max_retries=settings.max_retries,
        warm_start=warm_start, accept_space_change=accept_space_change,
    )
