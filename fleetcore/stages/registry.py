"""Post-extraction clip stages: the place where labelling and anonymisation run, between frame
extraction and JPEG encoding.

A stage is a callable ``stage(*, clip, telemetry, drive, record) -> list[label rows]`` that may
change ``clip.frames`` (e.g. blur faces) and add JSON-able keys to ``record`` (the sample's JSON).
The frames it gets are read-only views (several samples may share one): a stage that edits pixels
copies a frame and puts the copy in ``clip.frames`` in place of the original, for every sample
that shares it (copy on write, as the privacy stage does).
It raises a :class:`~fleetcore.errors.FleetError` to quarantine the clip (never passes bad frames on).
Stages are registered by name; ``build_stages`` builds them once per worker (``DoFn.setup``), each
from its options in the run config (``PrivacyOptions``, ``LabelsOptions``: fleetcore.stages.options).

A stage with ``frames_read_only = True`` (the labels stage) promises that it never changes
``clip.frames`` and that no later stage reads what it adds to ``record``. ``run_stages`` then runs
it on a snapshot of the frames in a second thread while the later stages (privacy blurring) run,
and merges its record keys and label rows in stage order afterwards: the result is the same as
running the stages one after the other. ``run_stages_then`` also calls a function of the caller's
as soon as the frames are final, while such a stage may still run (the curate job JPEG-encodes
the blurred frames there while the labellers finish).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

from fleetcore.errors import ConfigError
from fleetcore.timing import stage_time

T = TypeVar("T")


class ClipStage(Protocol):
    name: str

    def __call__(self, *, clip: Any, telemetry: dict[str, Any], drive: Any, record: dict[str, Any]) -> list[dict[str, Any]]: ...


def run_stages(stages: Sequence[Any], *, clip: Any, telemetry: Any, drive: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``stages`` on one clip, in order; returns their label rows (in stage order).

    A ``frames_read_only`` stage followed by other stages runs in a second thread on a snapshot of
    ``clip.frames`` (the frames as it would see them in order: the arrays are read-only, so later
    stages replace them rather than edit them) with its own record dict, merged into ``record``
    in stage order once every stage is done. The first exception in stage order is raised.
    """
    return run_stages_then(stages, None, clip=clip, telemetry=telemetry, drive=drive, record=record)[0]


def _timed(stage: Any, **kw: Any) -> list[dict[str, Any]]:
    """One stage's call, its time charged to the stage's name (fleetcore.timing)."""
    with stage_time(str(getattr(stage, "name", type(stage).__name__))):
        return stage(**kw) or []


def run_stages_then(stages: Sequence[Any], then: Callable[[], T] | None, *, clip: Any, telemetry: Any, drive: Any,
                    record: dict[str, Any]) -> tuple[list[dict[str, Any]], T | None]:
    """:func:`run_stages`, and ``then()`` called in this thread as soon as ``clip.frames`` are
    final (every stage that may change them is done) while the read-only stages may still be
    running: the caller can JPEG-encode the frames while a labeller finishes. Returns (label rows,
    what ``then`` returned). If a stage fails, ``then`` is not called (or what it returned is
    dropped) and the first exception in stage order is raised; an exception from ``then`` is
    raised after the stages' own.
    """
    import copy
    from concurrent.futures import Future, ThreadPoolExecutor

    for fs in clip.frames.values():  # the contract: stages get read-only frames (copy on write)
        for f in fs:
            if f is not None and f.flags.writeable:
                f.flags.writeable = False
    results: list[tuple[Future[list[dict[str, Any]]] | None, dict[str, Any] | None, list[dict[str, Any]] | None, BaseException | None]] = []
    pool: ThreadPoolExecutor | None = None
    failed = False
    then_result: T | None = None
    then_error: BaseException | None = None
    try:
        for i, stage in enumerate(stages):
            if getattr(stage, "frames_read_only", False) and i < len(stages) - 1:
                if pool is None:
                    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage")
                snap = copy.copy(clip)
                snap.frames = {cam: list(fs) for cam, fs in clip.frames.items()}
                own = dict(record)
                results.append((pool.submit(_timed, stage, clip=snap, telemetry=telemetry, drive=drive, record=own), own, None, None))
                continue
            try:
                rows = _timed(stage, clip=clip, telemetry=telemetry, drive=drive, record=record)
            except Exception as exc:  # re-raised below, after the read-only stages are joined
                results.append((None, None, None, exc))
                failed = True
                break
            results.append((None, None, rows, None))
        if then is not None and not failed:
            try:
                then_result = then()
            except Exception as exc:  # raised below, after the stages' own exceptions
                then_error = exc
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    out: list[dict[str, Any]] = []
    for fut, own, rows, exc in results:
        if fut is not None:
            err = fut.exception()
            if err is not None:
                raise err
            assert own is not None
            for k, v in own.items():
                if k not in record:
                    record[k] = v
            out.extend(fut.result())
        elif exc is not None:
            raise exc
        else:
            out.extend(rows or [])
    if then_error is not None:
        raise then_error
    return out, then_result


#: name -> factory building the stage from its options (``build_stages``' ``options[name]``, None
#: when the run has none for it); heavy objects are made in the factory, once per worker
REGISTRY: dict[str, Callable[[Any], ClipStage]] = {}


def register(name: str) -> Callable[[Callable[[Any], ClipStage]], Callable[[Any], ClipStage]]:
    def deco(factory: Callable[[Any], ClipStage]) -> Callable[[Any], ClipStage]:
        REGISTRY[name] = factory
        return factory

    return deco


def _load_builtin_stages() -> None:
    """Import the modules that register the shipped stages (lazily: they import cv2, onnxruntime)."""
    import importlib

    for mod in ("fleetcore.labels.stage", "fleetcore.stages.privacy"):  # register "labels", "privacy"
        importlib.import_module(mod)


def build_stages(names: Sequence[str], *, options: Mapping[str, Any] | None = None) -> list[ClipStage]:
    """The named stages, in order, each built by its factory from ``options[name]`` (the curate
    config's ``stage_options()``: ``{"privacy": PrivacyOptions, "labels": LabelsOptions}``); a
    stage without options is given None (its defaults)."""
    if any(n not in REGISTRY for n in names):
        _load_builtin_stages()
    opts = options or {}
    out = []
    for n in names:
        if n not in REGISTRY:
            raise ConfigError("<curate config>", f"unknown stage {n!r}; registered stages: {sorted(REGISTRY)}", field="stages")
        out.append(REGISTRY[n](opts.get(n)))
    return out


def stages_fingerprint(names: Sequence[str], *, options: Mapping[str, Any] | None = None) -> str:
    """A hash of what the named stages' output depends on (each stage's ``describe()``, built from
    ``options`` as ``build_stages`` builds it: labeller versions, detector settings ...). Part of the
    curate config version, so changing a labeller or the privacy settings re-curates drives."""
    import hashlib
    import json

    desc = []
    for name, stage in zip(names, build_stages(names, options=options)):
        describe = getattr(stage, "describe", None)
        desc.append([name, describe() if callable(describe) else None])
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:12]
