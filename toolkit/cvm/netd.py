"""`cvm netd`: the host agent. Keeps every VM wired across every restart, and serves
cvm's operations (cvm.ops) to its clients.

It follows the Docker event stream of this host's VMs. Whenever a VM's container
starts -- cvm restart, docker restart, a crash under a restart policy, a reboot from
inside the VM, a dockerd restart, a host reboot -- it re-applies that VM's NICs (and
their filters) from the persisted spec and releases the VM's init. When a VM's init
exits because the guest powered off (its shutdown path reports poweroff or halt, not
asked by the host's stop signal: see cvm.guestfiles), it stops the container and
records it stopped, so that the restart policy does not boot it again. A docker stop or
restart, a dockerd or host shutdown, a killed or OOM-killed init never change what the
VM should be. At its own start, and after losing the event stream, it reconciles
everything: bridges, running VMs, leftovers, stray VFs, stale filters.

On <state>/netd.sock it answers cvm.client requests: typed operations whose results the
caller renders; a request from a client of other code (cvm upgraded since netd
started) is refused, and the client runs the operation itself.
"""

import concurrent.futures
import logging
import os
import signal
import socketserver
import threading
import time

from . import guestfiles, ops, stopsignal, wire
from .client import STATUS_OP
from .engine import STOP_TIMEOUT_SYSTEMD
from .errors import CvmError, NotFound
from .paths import code_stamp, netd_socket

log = logging.getLogger("cvm.netd")
POWEROFF_EXIT = "130"  # 128 + SIGINT: how the kernel ends a PID namespace on poweroff/halt
JANITOR_INTERVAL = 2.0  # seconds between looks for operations whose process died


def _event_time(event):
    return event.get("timeNano", 0) / 1e9 or float(event.get("time", 0))


STOP_SIGNALS = {str(int(signal.SIGPWR)): signal.SIGPWR,
                str(int(stopsignal.SYSTEMD_HALT)): stopsignal.SYSTEMD_HALT}


def _stop_signal(event):
    """The stop signal `event` is Docker sending a VM's init, or None."""
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    if (event.get("Action") or event.get("status")) == "kill":
        return STOP_SIGNALS.get(attributes.get("signal"))
    return None


class Daemon:
    def __init__(self, ctx, workers=8):
        self.ctx = ctx
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="wire")
        self.server = None
        self.stopping = threading.Event()
        self.recovering = set()

    # ---------------------------------------------------------- reconcile

    def reconcile(self):
        """Make the host match the store: bridges, running VMs wired, leftovers gone."""
        from .net import hostbridge
        from .net.wiring import sweep
        started = time.monotonic()
        try:
            made = hostbridge.ensure_all(self.ctx)
            if made:
                log.info("recreated bridges %s", ", ".join(made))
        except CvmError as exc:
            log.error("bridges: %s", exc)
        # Recoveries start and remove VMs: done before the look at what runs, which the
        # sweep trusts.
        concurrent.futures.wait(self.recover_dead_operations())
        running = self.ctx.engine.running_vms(self.ctx.realm)
        futures = [self.pool.submit(self.wire, name) for name in sorted(running)]
        concurrent.futures.wait(futures)
        try:
            removed = sweep(self.ctx, running)
            if removed:
                log.info("removed leftovers: %s", ", ".join(removed))
        except CvmError as exc:
            log.error("sweep: %s", exc)
        log.info("reconciled %d running VMs in %.0f ms", len(running),
                 (time.monotonic() - started) * 1000)

    def wire(self, name):
        from . import api
        started = time.monotonic()
        try:
            vm = api.get(name, self.ctx)
            if vm.record.get("phase") != "ready":
                return  # its creator is still at work, and wires it itself
            vm.wire()
            log.info("wired %s in %.1f ms", name, (time.monotonic() - started) * 1000)
        except NotFound:
            pass  # removed meanwhile
        except CvmError as exc:
            log.error("wiring %s: %s", name, exc)
        except Exception:
            log.exception("wiring %s failed", name)

    def cleanup(self, name):
        """A VM's container died: remove its host-side pieces (proxy entries, VFs, filters).
        Not if it runs again by now: a replayed or late "die" must not unwire a new start
        (events of the last second are replayed after a netd restart)."""
        from . import api
        from .net.wiring import unwire_vm
        try:
            with self.ctx.store.vm_lock(name, existing=True):
                vm = api.get(name, self.ctx)
                spec = vm.spec
                if spec.nics and not vm.running:
                    unwire_vm(self.ctx, name, spec, None)
        except (NotFound, FileNotFoundError):
            pass  # removed meanwhile (a VM with NICs has its lock file until then)
        except CvmError as exc:
            log.error("cleaning up %s: %s", name, exc)

    # ---------------------------------------------------------- dead operations

    def recover_dead_operations(self):
        """Finish or undo what killed processes left half-done: a create, a frozen or
        stopped VM of an export, a move, an import (cvm.operations), a restore (its
        journal, cvm.snapshots). Returns the futures of the recoveries it began."""
        from . import operations, snapshots
        futures = []
        for name, operation in operations.dead(self.ctx).items():
            if name in self.recovering:
                continue
            self.recovering.add(name)
            futures.append(self.pool.submit(self._recover, name, operation))
        for line in snapshots.recover_restores(self.ctx):
            log.info("%s", line)
        return futures

    def _recover(self, name, operation):
        try:
            log.info("%s: the process of its %s (pid %s) is gone; recovering", name,
                     operation.get("kind"), operation.get("pid"))
            log.info("%s: %s", name, self.recover(name, operation))
        except CvmError as exc:
            log.error("recovering %s: %s", name, exc)
        except Exception:
            log.exception("recovering %s failed", name)
        finally:
            self.recovering.discard(name)

    def recover(self, name, operation):
        """Finish or undo what a dead process left of `operation` on VM `name`; what was
        done, in words."""
        from . import api, migrate, operations
        kind = operation.get("kind")
        if kind == "create":
            return api.finish_create(self.ctx, name)
        if kind == "migrate":
            return migrate.recover(self.ctx, name, operation)
        if kind == "import":
            from .bundle import undo_import
            return undo_import(self.ctx, name, operation)
        mode = operation.get("mode")
        if mode:
            operations.resume(api.get(name, self.ctx), mode, operation.get("boot"))
        operations.discard_staging(self.ctx, name, operation)
        if not mode:
            return "removed the copies a dead %s left" % kind
        return "%s left by a dead %s: running again" % (
            "thawed" if mode == "freeze" else "started", kind)

    def janitor(self, interval=JANITOR_INTERVAL):
        while not self.stopping.wait(interval):
            try:
                self.recover_dead_operations()
            except Exception:
                log.exception("looking for dead operations failed")

    # ---------------------------------------------------------- events

    def on_event(self, event):
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        name = attributes.get("io.cvm.vm")
        action = event.get("Action") or event.get("status")
        if not name:
            return
        stop_signal = _stop_signal(event)
        if action == "start":
            self.pool.submit(self.wire, name)
        elif stop_signal:
            stopsignal.follow(self.ctx.store, name, self.ctx.store.read_vm(name), event.get("id"),
                              asked_at=_event_time(event), signum=stop_signal)
        elif action == "die":
            # Read now, in event order: the next start's wiring clears the report.
            report = guestfiles.read_report(self.ctx.store, name)
            log.info("%s exited %s (%s)", name, attributes.get("exitCode"),
                     "%s, asked by the %s" % (report["shutdown"], report["initiator"] or "VM")
                     if report["shutdown"] else "no shutdown reported")
            inside = attributes.get("exitCode") == POWEROFF_EXIT and \
                attributes.get("io.cvm.init") in ("systemd", "compat") and \
                guestfiles.powered_off_from_inside(self.ctx.store, name)
            self.pool.submit(self.on_die, name, inside)

    def on_die(self, name, powered_off_inside):
        if powered_off_inside:
            self.powered_off(name)
        self.cleanup(name)

    def powered_off(self, name):
        """The guest ran poweroff: keep it off, as a VM would stay off."""
        from . import api
        try:
            vm = api.get(name, self.ctx)
            if vm.record.get("desired") == "stopped":
                return
            log.info("%s powered off from inside; stopping it", name)
            vm.stop(timeout=10)
        except CvmError as exc:
            log.error("stopping %s after poweroff: %s", name, exc)

    def follow_events(self):
        """Process events forever; after a lost stream, reconcile and resume. At its own
        start it also follows the stops asked while no netd ran (a `docker restart` then
        may have sent its stop signal to an init not yet taking it): Docker waits up to
        a VM's stop timeout for those, so their kill events are read that far back."""
        started = time.time()
        since = started - STOP_TIMEOUT_SYSTEMD
        while not self.stopping.is_set():
            try:
                self.reconcile()
                for event in self.ctx.engine.events(self.ctx.realm, since=int(since)):
                    since = event.get("time", since)
                    self.ctx.container_states.followed(event)
                    if _event_time(event) < started - 1 and not _stop_signal(event):
                        continue  # before this netd: the reconcile has seen to it
                    self.on_event(event)
                    if self.stopping.is_set():
                        return
            except CvmError as exc:
                log.error("%s; retrying in 1 s", exc)
            except Exception as exc:
                log.error("event stream lost (%s); retrying in 1 s", exc)
            self.ctx.container_states.lose_track()  # events are missed until it follows
            self.stopping.wait(1.0)

    # ---------------------------------------------------------- the socket

    def answer(self, request):
        """(reply, sockets to send with it) for one client request."""
        op = request.get("op")
        if op != STATUS_OP and request.get("code") != ops.LOADED_CODE:
            return {"ok": False, "refused": "cvm netd (pid %d) runs other code than this cvm; "
                    "restart it (cvm netd --stop)" % os.getpid()}, []
        started = time.monotonic()
        try:
            result = ops.handle(op, request.get("args"), self.ctx)
        except CvmError as exc:
            log.info("served %s in %.1f ms: %s", op, (time.monotonic() - started) * 1000, exc)
            return {"ok": False, "error": exc.to_dict()}, []
        except Exception as exc:
            log.exception("operation %r failed", op)
            return {"ok": False, "error": {"type": "CvmError", "message": "daemon error: %s: %s"
                                           % (type(exc).__name__, exc)}}, []
        if op != STATUS_OP:
            log.info("served %s in %.1f ms", op, (time.monotonic() - started) * 1000)
        if isinstance(result, ops.WithSockets):
            return {"ok": True, "result": result.result}, result.sockets
        return {"ok": True, "result": result}, []

    def serve(self):
        path = netd_socket(self.ctx.store.root)
        if os.path.exists(path):
            live = wire.connect(path, timeout=2)
            if live is not None:
                live.close()
                raise CvmError("another process serves %s (a cvm netd of older code? stop "
                               "it: cvm netd --stop, or pkill -f 'cvm netd')" % path)
            os.unlink(path)  # left by a netd that died
        daemon = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    request, _ = wire.receive(self.request)
                except ConnectionError:
                    return
                except ValueError as exc:
                    wire.send(self.request, {"ok": False, "error": {
                        "type": "CvmError", "message": "not a cvm request: %s" % exc}})
                    return
                reply, sockets = daemon.answer(request)
                try:
                    wire.send(self.request, reply, [s.fileno() for s in sockets])
                except ValueError:  # a value marshal lacks (a datetime): as JSON shows it
                    import json
                    wire.send(self.request, json.loads(json.dumps(reply, default=str)))
                finally:
                    for sock in sockets:
                        sock.close()  # the client holds its own copy now

        old_umask = os.umask(0o177)  # root only
        try:
            self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        finally:
            os.umask(old_umask)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="rpc", daemon=True).start()
        log.info("serving on %s", path)

    def run(self):
        """Serve until SIGTERM or SIGINT. The signal only wakes the main thread, through a
        pipe: raised into whatever that thread was doing (as a KeyboardInterrupt), it could
        leave a lock held -- logging's, say -- that the workers then wait on forever, and
        netd would never exit."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        self.start()
        threading.Thread(target=self.follow_events, name="events", daemon=True).start()
        os.read(wake_read, 1)
        self.shutdown()

    def start(self):
        ops.LOADED_CODE = code_stamp()
        self.ctx.store.make()  # its socket lives there; and it fails early without root
        self.serve()
        threading.Thread(target=self.janitor, name="janitor", daemon=True).start()
        from .containerstates import ContainerStates
        from .monitor import Monitor, Sampler, allow_open_files
        allow_open_files()
        self.ctx.sampler = Sampler(Monitor(self.ctx.store))
        self.ctx.container_states = ContainerStates(self.ctx.engine, self.ctx.realm)
        threading.Thread(target=self.ctx.sampler.run, args=(self.stopping,), name="sampler",
                         daemon=True).start()
        from .scheduled_snapshots import keep_taking
        threading.Thread(target=keep_taking, args=(self.ctx, self.stopping),
                         name="snapshots", daemon=True).start()

    def shutdown(self):
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            try:
                os.unlink(netd_socket(self.ctx.store.root))
            except OSError:
                pass
        self.pool.shutdown(wait=True)
