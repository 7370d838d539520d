"""The per-process registry of the ruleset versions live decisions evaluate, with a hot switch.

A request calls `registry.snapshot()` once and evaluates against that immutable object from start to
end, so it never mixes versions. A background task polls the store's generation counter; when it
moves, the new active and shadow versions are compiled first and then swapped in with one reference
assignment. If compiling fails the old snapshot stays and the failure is logged; the next poll retries.

Fencing: every successful poll confirms the snapshot against the store. A worker that cannot confirm
it for longer than the switch deadline (`RULES_SWITCH_DEADLINE_SECONDS`) refuses decisions (503) rather
than answer from a version that may have been replaced: every kind when it cannot read the store, only
the changed kinds when it read a newer state it could not compile. Each poll also writes the worker's
heartbeat for the fleet view (`service.rules.fleet`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.errors import ServiceError
from service.rules import repository as repo
from service.rules.fleet import Heartbeat, WorkerIdentity, record_heartbeat, remove_heartbeat
from service.rules.language import Evaluation, Evaluator, compile_ruleset, parse_ruleset
from service.rules.lifecycle import seed_if_empty
from service.rules.reuse import EvaluationReuse
from service.rules.trial import TrialWorker
from service.settings import EngineName, Settings
from service.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TraceLevel = Literal["none", "rules", "full"]


@dataclass(frozen=True)
class RulesetEvaluation:
    """An evaluation together with the version that produced it."""

    name: str
    version: int
    sha256: str
    evaluation: Evaluation

    @property
    def result(self) -> dict[str, Any]:
        return self.evaluation.result

    @property
    def matched(self) -> list[str]:
        return self.evaluation.matched

    def ruleset_ref(self) -> dict[str, Any]:
        """The `ruleset {name, version, sha256}` block of a decision response."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class ShadowComparison:
    """What the shadow version would have decided, and where that differs from the active one.

    `error` is set (and `shadow` is None) when the shadow version failed on these facts: a shadow
    can never make a live decision fail.
    """

    name: str
    version: int
    sha256: str
    shadow: RulesetEvaluation | None
    differences: dict[str, dict[str, Any]]
    error: str | None = None

    @property
    def same(self) -> bool:
        return self.error is None and not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "ruleset": {"name": self.name, "version": self.version, "sha256": self.sha256},
            "result": self.shadow.result if self.shadow is not None else None,
            "matched": self.shadow.matched if self.shadow is not None else None,
            "differences": self.differences,
            "error": self.error,
        }


def compare(active: Evaluation, shadow: Evaluation) -> dict[str, dict[str, Any]]:
    """Per result key (and `matched`) the two values, only where they differ."""
    differences: dict[str, dict[str, Any]] = {}
    for key in sorted(set(active.result) | set(shadow.result)):
        left, right = active.result.get(key), shadow.result.get(key)
        if left != right:
            differences[key] = {"active": left, "shadow": right}
    if active.matched != shadow.matched:
        differences["matched"] = {"active": list(active.matched), "shadow": list(shadow.matched)}
    return differences


@dataclass(frozen=True)
class CompiledVersion:
    name: str
    kind: str
    version: int
    sha256: str
    evaluator: Evaluator
    reuse: EvaluationReuse = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reuse", EvaluationReuse(self.evaluator))

    def evaluate(self, facts: Mapping[str, Any], trace: TraceLevel, reuse: bool = True) -> RulesetEvaluation:
        """Evaluate `facts`; with `reuse`, an earlier evaluation of the same fact values may answer
        (`service.rules.reuse`)."""
        evaluation = (
            self.reuse.evaluate(self.evaluator, facts, trace)
            if reuse
            else self.evaluator.evaluate(facts, trace)
        )
        return RulesetEvaluation(
            name=self.name, version=self.version, sha256=self.sha256, evaluation=evaluation
        )


@dataclass(frozen=True)
class ActiveRuleset:
    """The active version of one ruleset as this process serves it, with its optional shadow."""

    name: str
    kind: str
    version: int
    sha256: str
    engine: str
    compiled: CompiledVersion
    shadow_version: CompiledVersion | None = None

    def evaluate(self, facts: Mapping[str, Any], trace: TraceLevel = "rules") -> RulesetEvaluation:
        return self.compiled.evaluate(facts, trace)

    def shadow_evaluate(
        self, facts: Mapping[str, Any], active: RulesetEvaluation | None = None
    ) -> ShadowComparison | None:
        """Evaluate the shadow version (if any) on the same facts; report differences, never act on them."""
        if self.shadow_version is None:
            return None
        version = self.shadow_version
        try:
            primary = active if active is not None else self.compiled.evaluate(facts, "none", reuse=False)
            shadow = version.evaluate(facts, "none", reuse=False)
        except Exception as exc:  # the shadow is observed, never trusted: its failure is data
            return ShadowComparison(
                name=version.name,
                version=version.version,
                sha256=version.sha256,
                shadow=None,
                differences={},
                error=f"{type(exc).__name__}: {exc}",
            )
        return ShadowComparison(
            name=version.name,
            version=version.version,
            sha256=version.sha256,
            shadow=shadow,
            differences=compare(primary.evaluation, shadow.evaluation),
        )

    def describe(self) -> dict[str, Any]:
        shadow = self.shadow_version
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "sha256": self.sha256,
            "engine": self.engine,
            "shadow": None if shadow is None else {"version": shadow.version, "sha256": shadow.sha256},
        }


@dataclass(frozen=True)
class RegistrySnapshot:
    """An immutable view of every active ruleset at one store generation."""

    generation: int
    rulesets: Mapping[str, ActiveRuleset] = field(default_factory=dict)
    kind_defaults: Mapping[str, str] = field(default_factory=dict)

    def active(self, kind: str, name: str | None = None) -> ActiveRuleset | None:
        """The ruleset answering decisions of `kind`: the named one, else the kind's default."""
        chosen = name if name is not None else self.kind_defaults.get(kind)
        if chosen is None:
            return None
        ruleset = self.rulesets.get(chosen)
        if ruleset is None or ruleset.kind != kind:
            return None
        return ruleset

    def get(self, name: str) -> ActiveRuleset | None:
        return self.rulesets.get(name)

    def describe(self) -> dict[str, Any]:
        return {"generation": self.generation, "pid": os.getpid()}


EMPTY = RegistrySnapshot(generation=-1)


class RulesUnconfirmed(ServiceError):
    """This worker could not confirm within the switch deadline that it serves the current version."""

    def __init__(self, kind: str, seconds: float) -> None:
        super().__init__(
            f"this worker could not confirm the current {kind} ruleset for {seconds:.0f} s (the switch "
            "deadline); it refuses to decide on a version that may have been replaced",
            (),
            503,
            "Service unavailable",
            {"Retry-After": "2"},
        )


def _kinds(snapshot: RegistrySnapshot) -> dict[str, set[tuple[str, int, int | None]]]:
    served: dict[str, set[tuple[str, int, int | None]]] = {}
    for ruleset in snapshot.rulesets.values():
        shadow = ruleset.shadow_version.version if ruleset.shadow_version is not None else None
        served.setdefault(ruleset.kind, set()).add((ruleset.name, ruleset.version, shadow))
    return served


def _state_kinds(state: repo.LiveState) -> dict[str, set[tuple[str, int, int | None]]]:
    served: dict[str, set[tuple[str, int, int | None]]] = {}
    for live in state.active:
        shadow = state.shadows.get(live.name)
        served.setdefault(live.kind, set()).add((live.name, live.version, shadow.version if shadow else None))
    return served


class RulesRegistry:
    """Holds the current snapshot of this process and keeps it in step with the store."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        engine: EngineName,
        reload_interval_seconds: float = 1.0,
        *,
        switch_deadline_seconds: float = 10.0,
        heartbeat_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._engine: EngineName = engine
        self._interval = reload_interval_seconds
        self._snapshot = EMPTY
        self._task: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        self.switch_deadline_seconds = switch_deadline_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.identity = WorkerIdentity.of_this_process()
        self._clock = clock
        # when the store was last read and the snapshot found current (None: never)
        self._confirmed_at: float | None = None
        # kinds a read found changed but that could not be compiled, with when that was first seen
        self._behind: dict[str, float] = {}
        # generation of a replaced snapshot -> when it was last confirmed (the latest few), for requests
        # that took it before the swap and decide after it
        self._retired: dict[int, float] = {}
        self._beaten_at: float | None = None
        self._beaten_generation: int | None = None

    @property
    def engine(self) -> EngineName:
        return self._engine

    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot; take it once per request and use only it."""
        return self._snapshot

    def unconfirmed(self, kind: str) -> float | None:
        """How long this worker has been unable to confirm `kind`, if past the switch deadline; else None."""
        now = self._clock()
        since = self._confirmed_at
        if since is None or now - since > self.switch_deadline_seconds:
            return None if since is None else now - since
        behind = self._behind.get(kind)
        if behind is not None and now - behind > self.switch_deadline_seconds:
            return now - behind
        return None

    def confirm(self, kind: str, held: object | None = None) -> None:
        """Raise `RulesUnconfirmed` (503) when a decision of `kind` must not be made on this worker now.

        `held` is the snapshot the request took. One replaced since is still good for the request if it
        had been confirmed within the deadline; one the worker held unconfirmed past the deadline (the
        store unreadable) is not, even though the worker has since confirmed its successor."""
        stale = self.unconfirmed(kind)
        if stale is None and held is not None and held is not self._snapshot:
            last = self._retired.get(getattr(held, "generation", -1))
            waited = None if last is None else self._clock() - last
            if waited is None or waited > self.switch_deadline_seconds:
                stale = self.switch_deadline_seconds if waited is None else waited
        if stale is not None:
            raise RulesUnconfirmed(kind, stale)

    def confirmation(self) -> dict[str, Any]:
        """For the readiness probe: whether the snapshot is confirmed, and the kinds that are not."""
        now = self._clock()
        since = self._confirmed_at
        return {
            "confirmed_seconds_ago": None if since is None else round(now - since, 3),
            "switch_deadline_seconds": self.switch_deadline_seconds,
            "unconfirmed_kinds": sorted(
                kind
                for kind in {*_kinds(self._snapshot), *self._behind}
                if self.unconfirmed(kind) is not None
            ),
        }

    def _compile(
        self, live: repo.LiveVersion, known: Mapping[tuple[str, int, str], CompiledVersion]
    ) -> CompiledVersion:
        reuse = known.get((live.name, live.version, live.sha256))
        if reuse is not None:
            return reuse
        ruleset = parse_ruleset(live.yaml_text, f"{live.name}@{live.version}")
        return CompiledVersion(
            name=live.name,
            kind=live.kind,
            version=live.version,
            sha256=live.sha256,
            evaluator=compile_ruleset(ruleset, self._engine, version=live.version),
        )

    def _build(self, state: repo.LiveState) -> RegistrySnapshot:
        known: dict[tuple[str, int, str], CompiledVersion] = {}
        for ruleset in self._snapshot.rulesets.values():
            for compiled in (ruleset.compiled, ruleset.shadow_version):
                if compiled is not None:
                    known[(compiled.name, compiled.version, compiled.sha256)] = compiled
        rulesets: dict[str, ActiveRuleset] = {}
        for live in state.active:
            compiled = self._compile(live, known)
            shadow_live = state.shadows.get(live.name)
            shadow = self._compile(shadow_live, known) if shadow_live is not None else None
            rulesets[live.name] = ActiveRuleset(
                name=live.name,
                kind=live.kind,
                version=live.version,
                sha256=live.sha256,
                engine=self._engine,
                compiled=compiled,
                shadow_version=shadow,
            )
        # Read-only views: a snapshot is shared by every request in flight and must never change.
        return RegistrySnapshot(
            generation=state.generation,
            rulesets=MappingProxyType(rulesets),
            kind_defaults=MappingProxyType(dict(state.kind_defaults)),
        )

    async def refresh(self, *, force: bool = False) -> bool:
        """Load and swap in the store's state if its generation moved; True when the snapshot changed."""
        # One refresh at a time per process, so a slow older read can never overwrite a newer one.
        async with self._refreshing:
            read_at = self._clock()  # what the read confirms, it confirms as of its start
            async with self._sessions() as session:
                generation = await repo.current_generation(session)
                if not force and generation == self._snapshot.generation:
                    self._confirmed(read_at)
                    return False
                state = await repo.live_state(session)
            if not force and state.generation < self._snapshot.generation:
                self._confirmed(read_at)
                return False
            # Compiled fully before the swap: a request never sees a half-built snapshot.
            try:
                snapshot = self._build(state)
            except Exception:
                self._fell_behind(state, read_at)
                raise
            if self._confirmed_at is not None:
                self._retired[self._snapshot.generation] = self._confirmed_at
                for generation in sorted(self._retired)[:-8]:
                    del self._retired[generation]
            self._snapshot = snapshot
            self._confirmed(read_at)
            self.last_refresh = time.monotonic()
        log.info(
            "pid %d: rulesets at generation %d: %s",
            os.getpid(),
            snapshot.generation,
            ", ".join(f"{r.name}@{r.version}" for r in snapshot.rulesets.values()) or "none",
        )
        return True

    async def follow_change(self) -> None:
        """After a change this worker committed (publish, shadow, rollback...): switch this worker at once,
        heartbeat included; the other workers follow at their next poll.

        The change is already committed, so a failed reload here is logged, not raised: the poller retries.
        """
        try:
            await self.refresh()
            await self.beat()  # the fleet view shows the switch at once too
        except Exception:
            log.exception("immediate ruleset reload failed; the poller will retry")

    def _confirmed(self, read_at: float) -> None:
        self._confirmed_at = read_at
        self._behind.clear()

    def _fell_behind(self, state: repo.LiveState, read_at: float) -> None:
        """The store was read but its state could not be built: the unchanged kinds are still confirmed."""
        held, wanted = _kinds(self._snapshot), _state_kinds(state)
        changed = {kind for kind in {*held, *wanted} if held.get(kind) != wanted.get(kind)}
        for kind in list(self._behind):
            if kind not in changed:
                del self._behind[kind]
        for kind in changed:
            self._behind.setdefault(kind, read_at)
        self._confirmed_at = read_at

    def heartbeat(self) -> Heartbeat:
        snapshot = self._snapshot
        served = [
            {
                "name": ruleset.name,
                "kind": ruleset.kind,
                "version": ruleset.version,
                "sha256": ruleset.sha256,
                "shadow": ruleset.shadow_version.version if ruleset.shadow_version is not None else None,
            }
            for ruleset in sorted(snapshot.rulesets.values(), key=lambda r: r.name)
        ]
        error = None if self.last_error is None else self.last_error[:200]
        return Heartbeat(snapshot.generation, self._engine, served, error)

    async def beat(self, *, force: bool = False) -> None:
        """Write this worker's heartbeat if its snapshot changed or a heartbeat period has passed."""
        now = self._clock()
        generation = self._snapshot.generation
        due = self._beaten_at is None or now - self._beaten_at >= self.heartbeat_seconds
        if not (force or due or generation != self._beaten_generation):
            return
        async with self._sessions() as session:
            await record_heartbeat(session, self.identity, self.heartbeat())
        self._beaten_at, self._beaten_generation = now, generation

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                # A database that stops answering must not freeze the switch: give up and retry.
                await asyncio.wait_for(self.refresh(), timeout=max(5.0, 5 * self._interval))
                self.last_error = None
            except Exception as exc:  # keep serving the old snapshot whatever went wrong
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("ruleset reload failed; keeping generation %d", self._snapshot.generation)
            try:
                await asyncio.wait_for(self.beat(), timeout=max(5.0, 5 * self._interval))
            except Exception:  # the fleet view misses a beat; deciding goes on
                log.warning("ruleset heartbeat not written", exc_info=True)

    async def start(self) -> None:
        """Load the current state, write the first heartbeat, then keep polling in the background."""
        await self.refresh(force=True)
        try:
            await self.beat(force=True)
        except Exception:
            log.warning("ruleset heartbeat not written", exc_info=True)
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="rules-registry-poll")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            try:
                async with self._sessions() as session:
                    await asyncio.wait_for(remove_heartbeat(session, self.identity), timeout=2.0)
            except Exception:  # the row ages out of the fleet view instead
                log.warning("ruleset heartbeat not removed", exc_info=True)

    async def close(self) -> None:
        """Called by the app at shutdown (the same as `stop`)."""
        await self.stop()


async def open_registry(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], trials: TrialWorker
) -> RulesRegistry:
    """Seed an empty store from `settings.rules.rulesets_dir` (checking each file in `trials`), load the
    active versions, start polling.

    The caller closes it with `await registry.close()` at shutdown.
    """
    await seed_if_empty(sessions, trials, settings.rules.rulesets_dir)
    registry = RulesRegistry(
        sessions,
        settings.rules.engine,
        settings.rules.reload_interval_seconds,
        switch_deadline_seconds=settings.rules.switch_deadline_seconds,
        heartbeat_seconds=settings.rules.heartbeat_seconds,
    )
    await registry.start()
    return registry
