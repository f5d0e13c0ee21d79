"""Forked worker processes that each read segments of a file, fed and answered through pipes.

:mod:`framework.audit.parallel` hands out segments and settles their events in file order. It once
used ``concurrent.futures.ProcessPoolExecutor``, which keeps a thread in the calling process to
receive every result and hand it over through a future: on the 1 GB Codex benchmark that thread
took about 0.13 s of CPU, and it took the interpreter lock from the thread checking the events at
every result. Here the calling thread reads the results itself: each worker has a pipe for its
tasks and one for its results, and answers its tasks in the order it got them.

Only what :func:`framework.audit.parallel.read_events` needs: Linux ``fork`` (the work function
and the readers are already in the children's memory, nothing is pickled but a failing worker's
exception), and a worker that dies fails the read with :class:`WorkerDied` instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterable
from multiprocessing.connection import Connection, Pipe, wait
from typing import TypeAlias

import msgspec

Task: TypeAlias = tuple[str, int, int | None]
"""What a worker is given: a file, and the offsets of the segment to read in it."""
Work: TypeAlias = Callable[[str, int, int | None], bytes]

OK, FAILED = b"R", b"E"
"""The first byte of a worker's answer: a result follows, or its exception, pickled."""
PIPE_BYTES = 1 << 20
"""What a result pipe holds (Linux's default is 64 KB, the most it allows a process that is not
root is usually 1 MB): a worker whose answer fits goes on with its next task even while the caller
is busy checking events, instead of waiting for it to read."""

_tasks = msgspec.msgpack.Encoder()
_task = msgspec.msgpack.Decoder(tuple[str, int, int | None])


class WorkerDied(RuntimeError):
    """A worker process ended before answering (killed for memory, say)."""


class _Worker:
    """One forked process, its two pipes, and the tasks it has not answered yet."""

    def __init__(self, pid: int, tasks: Connection, results: Connection) -> None:
        self.pid = pid
        self.tasks = tasks
        self.results = results
        self.given = 0
        """Tasks sent and not answered yet."""
        self.answers: deque[memoryview] = deque()
        """Results received before the caller asked for them."""

    def give(self, task: Task) -> None:
        try:
            self.tasks.send_bytes(_tasks.encode(task))
        except OSError:  # the worker is gone (a broken pipe)
            raise WorkerDied(self._death()) from None
        self.given += 1

    def receive(self) -> None:
        try:
            answer = self.results.recv_bytes()
        except (EOFError, OSError):
            raise WorkerDied(self._death()) from None
        self.given -= 1
        if answer[:1] == FAILED:
            raise _unpickled(answer[1:])
        self.answers.append(memoryview(answer)[1:])

    def _death(self) -> str:
        """How the worker ended, once it has (killed if it has not after a few seconds: its pipe
        broke, so it can do nothing more)."""
        status = 0
        try:
            for _ in range(50):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.1)
            else:
                os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            how = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        else:
            how = f"exited with status {os.waitstatus_to_exitcode(status)}"
        return f"an audit worker process (pid {self.pid}) {how} before sending its events"


def run_in_workers(
    work: Work, tasks: Iterable[Task], count: int, in_flight: int, start: Callable[[], None]
) -> Generator[memoryview, None, None]:
    """``work(*task)`` for each of ``tasks``, in their order, computed by ``count`` forked
    processes (each runs ``start`` first). At most ``in_flight`` tasks per process are given out
    and not yet yielded, each to the process with the fewest unanswered."""
    workers: list[_Worker] = []
    done = False
    try:
        for _ in range(count):
            workers.append(_fork(work, start, workers))
        by_results = {worker.results: worker for worker in workers}
        order: deque[_Worker] = deque()  # who was given each task not yet yielded
        pending = iter(tasks)

        def hand_out() -> None:
            while len(order) < in_flight * count:
                task = next(pending, None)
                if task is None:
                    return
                worker = min(workers, key=lambda w: w.given)
                worker.give(task)
                order.append(worker)

        def collect(timeout: float | None) -> None:
            """Receive the answers that are ready (waiting up to ``timeout``; None: for one)."""
            busy = [w.results for w in workers if w.given]
            if not busy and timeout is None:  # never: a task not yielded is answered or given
                raise RuntimeError("audit workers: waiting for an answer no worker owes")
            for ready in wait(busy, timeout) if busy else ():
                by_results[ready].receive()  # type: ignore[index]

        hand_out()
        while order:
            worker = order.popleft()
            while not worker.answers:
                collect(None)
            answer = worker.answers.popleft()
            hand_out()
            collect(0)  # free the pipes of workers that finished while this thread was busy
            yield answer
        done = True
    finally:
        _stop(workers, done)


def _fork(work: Work, start: Callable[[], None], others: list[_Worker]) -> _Worker:
    task_reader, task_writer = Pipe(duplex=False)
    result_reader, result_writer = Pipe(duplex=False)
    _widen(result_writer)
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        status = 1
        try:
            for other in others:  # or the caller's closing them would not end those workers
                other.tasks.close()
                other.results.close()
            task_writer.close()
            result_reader.close()
            start()
            _serve(work, task_reader, result_writer)
            status = 0
        finally:
            os._exit(status)
    task_reader.close()
    result_writer.close()
    return _Worker(pid, task_writer, result_reader)


def _widen(pipe: Connection) -> None:
    """Let ``pipe`` hold :data:`PIPE_BYTES` where the system allows it (Linux)."""
    import fcntl

    # another system, or a lower limit: the default stays
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _serve(work: Work, tasks: Connection, results: Connection) -> None:
    """A worker's loop: answer each task until the caller closes the task pipe."""
    while True:
        try:
            task = tasks.recv_bytes()
        except EOFError:
            return
        try:
            answer = work(*_task.decode(task))
        except Exception as exc:
            results.send_bytes(FAILED + _pickled(exc))
        else:
            results.send_bytes(OK + answer)


def _unpickled(data: bytes) -> BaseException:
    """The exception a worker sent (a RuntimeError when it cannot be rebuilt here)."""
    try:
        exc = pickle.loads(data)
    except Exception as error:
        return RuntimeError(f"an audit worker failed, and its error could not be read: {error}")
    return exc if isinstance(exc, BaseException) else RuntimeError(f"an audit worker sent {exc!r}")


def _pickled(exc: Exception) -> bytes:
    """``exc`` pickled, with where it was raised in the worker as a note (its traceback cannot
    travel); a RuntimeError saying what it was when it cannot be pickled."""
    where = "".join(traceback.format_exception(exc))
    exc.add_note(f"raised in an audit worker process:\n{where}")
    try:
        return pickle.dumps(exc)
    except Exception:
        return pickle.dumps(RuntimeError(f"an audit worker failed:\n{where}"))


def _stop(workers: list[_Worker], done: bool) -> None:
    """Close the pipes and reap the workers: they end at the end of their task pipe once all is
    done; after a failure or an early stop they are killed, since they may be mid-task."""
    for worker in workers:
        worker.tasks.close()
        worker.results.close()
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # already reaped (see _Worker._death)
            os.waitpid(worker.pid, 0)
