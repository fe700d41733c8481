"""The worker's decisions and its handling of trial outcomes, in process with stand-in objectives.

``next_action`` is a pure function of :class:`hpo.study.budget.BudgetState`; ``budget_state``
counts a
real study whose trials went through Optuna's own retry callback.  The worker loop is run with
objectives that return at once, so every branch (errors, training failures, interruption, waiting
on other workers, a dead worker's retry, time budgets) takes well under a second or two.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.execution.run import run_worker
from hpo.execution.worker import TrialError
from hpo.storage.database import open_storage
from hpo.storage.journal import HeartbeatJournalStorage
from hpo.storage.stale import retried_trial_number
from hpo.study.budget import BudgetState, budget_state, next_action
from hpo.study.config import study_config_from_dict
from hpo.study.create import create_study
from model.contract import Status, TrialAttr
from model.errors import TrainingFailed, WorkerInterrupted

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]

X = {"x": FloatDistribution(0, 1)}


def _cfg(tmp_path, name="w", *, n_trials=4, timeout=None, sampler="random", space=None,
         scheme="sqlite"):
    url = f"sqlite:///{tmp_path}/{name}.db" if scheme == "sqlite" else \
        f"journal:///{tmp_path}/{name}.log"
    budget = {k: v for k, v in (("n_trials", n_trials), ("timeout", timeout)) if v is not None}
    return study_config_from_dict({
        "name": name, "storage": url, "sampler": {"name": sampler}, "pruner": {"name": "none"},
        "budget": budget, "heartbeat": {"interval": 1, "grace": 2, "max_retry": 1},
        **({"space": space} if space else {})})


def _value(trial, config, should_stop):
    return trial.suggest_float("x", 0, 1)


# --- next_action: every branch ------------------------------------------------------------------

def _state(finished=0, running=0, waiting=0, originals=0, n_trials=4, grid_size=None):
    return BudgetState(finished=finished, running=running, waiting=waiting, originals=originals,
                       n_trials=n_trials, grid_size=grid_size)


@pytest.mark.parametrize("state, action", [
    # a trial budget
    (_state(), "run"),  # empty study
    (_state(finished=3, originals=3), "run"),  # room for one more
    (_state(finished=4, originals=4), "done"),  # budget spent
    (_state(finished=5, originals=5), "done"),  # over budget (lowered since): no retries either
    (_state(finished=4, waiting=1, originals=4), "done"),  # spent: a queued retry is not run
    (_state(finished=2, running=2, originals=4), "wait"),  # the rest is with other workers
    (_state(finished=2, running=1, originals=3), "run"),  # others run one, one more fits
    (_state(finished=2, running=2, waiting=1, originals=4), "run"),  # a dead worker's retry
    (_state(finished=3, running=0, waiting=0, originals=3, n_trials=3), "done"),
    # grid studies: never start a grid point twice
    (_state(originals=1, running=1, n_trials=None, grid_size=2), "run"),  # a point is left
    (_state(finished=1, running=1, originals=2, n_trials=None, grid_size=2), "wait"),
    (_state(finished=2, originals=2, n_trials=None, grid_size=2), "done"),
    (_state(finished=1, running=1, waiting=1, originals=2, n_trials=None, grid_size=2), "run"),
    (_state(finished=2, originals=2, n_trials=10, grid_size=2), "done"),  # grid below budget
    (_state(running=2, originals=2, n_trials=2, grid_size=3), "wait"),  # budget below grid
    (_state(finished=2, originals=2, n_trials=2, grid_size=3), "done"),
    # time-only budgets (no trial count): always room
    (_state(finished=100, running=7, originals=107, n_trials=None), "run"),
    (_state(n_trials=None), "run"),
])
def test_next_action(state, action):
    assert next_action(state) == action


# --- budget_state on a real study ---------------------------------------------------------------

def test_budget_state_counts_retries_once(tmp_path):
    cfg = _cfg(tmp_path, "b", n_trials=6, scheme="journal")
    study = create_study(cfg)
    storage = study._storage
    assert isinstance(storage, HeartbeatJournalStorage)
    assert budget_state(study, cfg, 6) == _state(n_trials=6)

    def ask():
        trial = study.ask(X)
        storage.record_heartbeat(trial._trial_id)
        return trial

    def die(trial):  # its worker stopped beating 10 s ago; another worker notices
        storage.set_trial_system_attr(trial._trial_id, HeartbeatJournalStorage.KEY,
                                      time.time() - 10)
        optuna.storages.fail_stale_trials(study)

    study.tell(ask(), 0.5)  # 0 COMPLETE
    study.tell(ask(), state=TrialState.PRUNED)  # 1 PRUNED
    study.tell(ask(), state=TrialState.FAIL)  # 2 FAIL: a training failure, counts
    die(ask())  # 3 FAIL, retried as 4 (WAITING): does not count
    ask()  # the next ask pops the retry: 4 RUNNING
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                         TrialState.FAIL, TrialState.RUNNING]
    assert retried_trial_number(trials[4]) == 3
    assert budget_state(study, cfg, 6) == _state(finished=3, running=1, originals=4, n_trials=6)

    die(trials[4])  # the retry's worker dies too: max_retry = 1, so no more retries
    ask()  # 5 RUNNING, a new trial
    state = budget_state(study, cfg, 6)
    assert state == _state(finished=4, running=1, originals=5, n_trials=6)
    assert next_action(state) == "run"
    assert next_action(budget_state(study, cfg, 5)) == "wait"
    assert next_action(budget_state(study, cfg, 4)) == "done"


def test_budget_state_of_a_grid_study(tmp_path):
    cfg = _cfg(tmp_path, "g", n_trials=None, sampler="grid", space={"sigma": [0.1, 0.5]})
    study = create_study(cfg)
    assert cfg.n_trials == 2  # a grid study's budget defaults to its size
    assert budget_state(study, cfg, cfg.n_trials) == _state(n_trials=2, grid_size=2)
    assert budget_state(study, cfg, None).grid_size == 2
    assert budget_state(study, _cfg(tmp_path, "r"), None).grid_size is None


# --- the worker loop ----------------------------------------------------------------------------

def test_unexpected_errors_fail_the_trial_and_several_in_a_row_stop_the_worker(tmp_path):
    calls = []

    def flaky(trial, config, should_stop):
        calls.append(trial.number)
        if len(calls) == 1 or len(calls) >= 4:
            raise ValueError(f"bad luck {len(calls)}")
        return _value(trial, config, should_stop)

    cfg = _cfg(tmp_path, n_trials=20)
    with pytest.raises(TrialError, match=r"trial 5: ValueError: bad luck 6") as err:
        run_worker(cfg, objective_fn=flaky, handle_signals=False)
    assert isinstance(err.value.__cause__, ValueError)
    trials = create_study(cfg).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2 + \
        [TrialState.FAIL] * 3
    for t in (trials[0], *trials[3:]):
        assert t.user_attrs[TrialAttr.STATUS] == Status.ERROR
        assert t.user_attrs[TrialAttr.FAILURE].startswith("ValueError: bad luck")


def test_training_failures_count_towards_the_budget(tmp_path):
    def diverging(trial, config, should_stop):
        x = _value(trial, config, should_stop)
        if trial.number == 1:
            raise TrainingFailed(3, "loss is nan")
        return x

    cfg = _cfg(tmp_path, n_trials=3)
    s = run_worker(cfg, objective_fn=diverging, handle_signals=False)
    assert (s.completed, s.failed, s.interrupted, s.trials) == (2, 1, False, [0, 1, 2])
    states = [t.state for t in create_study(cfg).get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_interruption_requeues_and_the_next_worker_runs_the_retry_first(tmp_path):
    def interrupted_at_1(trial, config, should_stop):
        x = _value(trial, config, should_stop)
        if trial.number == 1:
            raise WorkerInterrupted("stopped by a signal after epoch 2")
        return x

    cfg = _cfg(tmp_path, n_trials=3)
    s = run_worker(cfg, objective_fn=interrupted_at_1, handle_signals=False)
    assert (s.completed, s.failed, s.interrupted, s.trials) == (1, 0, True, [0, 1])
    failed, retry = create_study(cfg).get_trials()[1:]
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert failed.user_attrs[TrialAttr.STATUS] == Status.INTERRUPTED
    assert failed.user_attrs[TrialAttr.FAILURE] == "stopped by a signal after epoch 2"
    assert retried_trial_number(retry) == 1 and retry.params == failed.params

    s = run_worker(cfg, objective_fn=_value, handle_signals=False)
    assert (s.completed, s.trials) == (2, [2, 3])  # the retry, then the last new trial
    trials = create_study(cfg).get_trials()
    assert trials[2].state == TrialState.COMPLETE and trials[2].params == failed.params
    assert budget_state(create_study(cfg), cfg, 3).finished == 3


def test_a_signal_stops_after_the_trial_and_the_handlers_come_back(tmp_path):
    before = signal.getsignal(signal.SIGTERM)

    def signalled(trial, config, should_stop):
        x = _value(trial, config, should_stop)
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from outside
            assert should_stop()
            raise WorkerInterrupted("stopped by a signal after epoch 1")
        return x

    cfg = _cfg(tmp_path, n_trials=4)
    s = run_worker(cfg, objective_fn=signalled)
    assert s.interrupted and s.trials == [0, 1]
    assert signal.getsignal(signal.SIGTERM) is before
    states = [t.state for t in create_study(cfg).get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]


def _foreign_trial(cfg, beating: bool):
    """A trial RUNNING in "another worker": its heartbeat goes on in a thread, or stopped."""
    storage = open_storage(cfg.storage, heartbeat_interval=1, grace_period=2, max_retry=1)
    study = optuna.load_study(study_name=cfg.name, storage=storage)
    trial = study.ask(X)
    storage.record_heartbeat(trial._trial_id)
    stop = threading.Event()

    def beat():
        while not stop.wait(0.5):
            storage.record_heartbeat(trial._trial_id)

    if beating:
        threading.Thread(target=beat, daemon=True).start()
    return study, trial, stop


@pytest.mark.slow
def test_worker_waits_while_another_runs_the_last_trial(tmp_path):
    cfg = _cfg(tmp_path, n_trials=1)
    create_study(cfg)
    study, trial, stop = _foreign_trial(cfg, beating=True)

    def finish():
        stop.set()
        study.tell(trial, 0.25)

    threading.Timer(3.0, finish).start()  # longer than the grace period: still alive
    start = time.monotonic()
    s = run_worker(cfg, objective_fn=_value, handle_signals=False, poll_interval=0.2)
    assert s.run == 0 and s.trials == []
    assert time.monotonic() - start >= 2.9  # it waited for the other one
    assert [t.state for t in create_study(cfg).get_trials()] == [TrialState.COMPLETE]


@pytest.mark.slow
def test_worker_retries_the_trial_of_a_worker_that_died(tmp_path):
    cfg = _cfg(tmp_path, n_trials=1)
    create_study(cfg)
    _, dead, _ = _foreign_trial(cfg, beating=False)  # as after SIGKILL: no more heartbeats
    s = run_worker(cfg, objective_fn=_value, handle_signals=False, poll_interval=0.2)
    assert (s.completed, s.trials) == (1, [1])
    failed, retry = create_study(cfg).get_trials()
    assert failed.number == dead.number and failed.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retried_trial_number(retry) == dead.number
    assert retry.params == failed.params


@pytest.mark.slow
def test_time_only_budget(tmp_path):
    def slow(trial, config, should_stop):
        time.sleep(0.2)
        return _value(trial, config, should_stop)

    cfg = _cfg(tmp_path, n_trials=None, timeout=60)
    assert cfg.n_trials is None  # no trial count: the worker runs until its time is spent
    assert run_worker(cfg, objective_fn=slow, timeout=0, handle_signals=False).run == 0
    start = time.monotonic()
    s = run_worker(cfg, objective_fn=slow, timeout=1.0, handle_signals=False)
    assert 2 <= s.completed <= 6 and time.monotonic() - start < 3
    # the study file's timeout is the default
    timed = _cfg(tmp_path, "t", n_trials=None, timeout=0.5)
    assert 1 <= run_worker(timed, objective_fn=slow, handle_signals=False).completed <= 4


# --- faults (issue 9): interrupts outside the retry budget, deaths before the first heartbeat ---

@pytest.mark.slow
def test_the_same_grid_point_interrupted_five_times_is_still_queued_and_completes(tmp_path):
    """max_retry (1 here) is for dead workers: re-queues after SIGINT/SIGTERM never use it up."""
    attempts: list[float] = []

    def interrupted_5_times(trial, config, should_stop):
        sigma = config.suggest(trial)["sigma"]
        if sigma == 0.1 and len(attempts) < 5:
            attempts.append(sigma)
            raise WorkerInterrupted(f"stopped by a signal (attempt {len(attempts)})")
        return sigma

    cfg = _cfg(tmp_path, "i", n_trials=None, sampler="grid", space={"sigma": [0.1, 0.5]})
    for _ in range(10):  # each interrupted worker exits; a new one starts
        s = run_worker(cfg, objective_fn=interrupted_5_times, handle_signals=False)
        if not s.interrupted:
            break
    assert len(attempts) == 5
    trials = create_study(cfg).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 5 and TrialState.WAITING not in states
    done = sorted(t.params["sigma"] for t in trials if t.state == TrialState.COMPLETE)
    assert done == [0.1, 0.5]  # every grid point complete, once
    state = budget_state(create_study(cfg), cfg, cfg.n_trials)
    assert (state.finished, state.originals, state.running) == (2, 2, 0)
    last = next(t for t in trials if t.state == TrialState.COMPLETE and t.params["sigma"] == 0.1)
    assert last.user_attrs[TrialAttr.ORIGIN] == retried_trial_number(last)


@pytest.mark.slow
def test_a_trial_that_never_had_a_heartbeat_is_retried(tmp_path):
    """A worker killed between ask() and its first heartbeat (SQLite: no heartbeat row)."""
    cfg = _cfg(tmp_path, n_trials=1)
    study = create_study(cfg)
    storage = open_storage(cfg.storage, heartbeat_interval=1, grace_period=2, max_retry=1)
    with pytest.warns(UserWarning):
        silent = optuna.load_study(study_name=cfg.name, storage=storage).ask(X)
    start = time.monotonic()
    s = run_worker(cfg, objective_fn=_value, handle_signals=False, poll_interval=0.2)
    assert time.monotonic() - start < 30
    assert (s.completed, s.trials) == (1, [1])
    failed, retry = study.get_trials()
    assert failed.number == silent.number and failed.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retried_trial_number(retry) == silent.number
