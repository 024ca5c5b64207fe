"""`cvm tune NAME SERVICE`: size a service inside a VM to the VM's real limits.

For each service: render templates/services/ with cvm.sizing's rules and the VM's
CPUs and memory (read from its cgroup), show the diff against what is in the VM, write
it where the distro's service reads it (an include or drop-in, not the main config),
check it with the service's own check, reload. A failed check puts the previous files
back: the service keeps running on them. `--set key=value` overrides a computed value
and is kept for later re-tunes (cvm resize re-tunes the VM's `tune:` services).
"""

import difflib
import shlex

from . import sizing
from .errors import CvmError, NotFound, SpecError
from .spec import split_key_value

MIB = 1 << 20


class Service:
    """How one service is found, sized, written, checked and reloaded inside a VM."""

    def __init__(self, name, detect, rule, files, check=None, prepare=None, reload=None,
                 verify=None, extra_keys=()):
        self.name = name
        self.detect = detect      # shell: exit 0 when the service is installed
        self.rule = rule          # (cpus, memory, overrides) -> settings
        self.files = files        # [(template, shell that prints the target path)]
        self.check = check        # shell: the service's own config check
        self.prepare = prepare    # shell: one-time, idempotent hook-up of the include
        self.reload = reload      # shell: make the running service use the new values
        self.verify = verify      # (settings) -> shell that prints what the service uses
        self.extra_keys = extra_keys


def _in_first_dir(filename, *candidates):
    """Shell that prints `filename` in the first of `candidates` that exists."""
    return "for d in %s; do [ -d $d ] && echo $d/%s && exit 0; done; exit 3" % (
        " ".join(candidates), filename)


def _nginx_rule(cpus, memory, overrides):
    return sizing.nginx(cpus, memory)


def _redis_rule(cpus, memory, overrides):
    persistence = str(overrides.get("persistence", "yes")).lower() not in ("no", "false", "0")
    return sizing.redis(memory, persistence)


def _mysql_rule(cpus, memory, overrides):
    return sizing.mysql(cpus, memory)


def _php_rule(cpus, memory, overrides):
    return sizing.php_fpm(cpus, memory, int(overrides.get("child_mib", 64)))


def _jvm_rule(cpus, memory, overrides):
    aware = str(overrides.get("container_aware", "yes")).lower() not in ("no", "false", "0")
    return {"options": sizing.jvm(cpus, memory, aware)}


NGINX_PREPARE = r"""
conf=/etc/nginx/nginx.conf
grep -q 'cvm-events.conf' $conf && exit 0
cp -p $conf $conf.cvm-orig
sed -i -E 's/^([[:space:]]*)(worker_processes[[:space:]])/\1# cvm tune: \2/' $conf
sed -i -E 's/^([[:space:]]*)(worker_connections[[:space:]].*)$/\1# cvm tune: \2\n\1include \/etc\/nginx\/cvm-events.conf;/' $conf
grep -q 'cvm-events.conf' $conf || sed -i -E 's/^(events[[:space:]]*\{)/\1\n    include \/etc\/nginx\/cvm-events.conf;/' $conf
"""

REDIS_CONF = "for f in /etc/redis/redis.conf /etc/redis.conf; do [ -f $f ] && echo $f && break; done"
REDIS_PREPARE = r"""
conf=$(%s)
[ -n "$conf" ] || exit 3
include="include $(dirname $conf)/cvm-tune.conf"
grep -qxF "$include" $conf || { cp -p $conf $conf.cvm-orig; echo "$include" >> $conf; }
""" % REDIS_CONF

SERVICES = {
    "nginx": Service(
        "nginx", "command -v nginx", _nginx_rule,
        [("nginx-main.conf.j2", _in_first_dir("00-cvm-tune.conf", "/etc/nginx/modules-enabled",
                                              "/usr/share/nginx/modules")),
         ("nginx-events.conf.j2", "echo /etc/nginx/cvm-events.conf")],
        check="nginx -t", prepare=NGINX_PREPARE,
        reload="systemctl reload nginx 2>/dev/null || nginx -s reload",
        verify=lambda s: "nginx -T 2>/dev/null | grep -E '^worker_(processes|rlimit_nofile)'"),
    "redis": Service(
        "redis", "command -v redis-server", _redis_rule,
        [("redis.conf.j2", "dirname $(%s) | sed 's|$|/cvm-tune.conf|'" % REDIS_CONF)],
        prepare=REDIS_PREPARE,
        # Redis has no config check mode: CONFIG SET validates each value, live.
        reload=lambda s: " && ".join("redis-cli CONFIG SET %s %s >/dev/null" % (k, v)
                                     for k, v in sorted(s.items())),
        verify=lambda s: "redis-cli CONFIG GET maxmemory; redis-cli CONFIG GET "
                         "maxmemory-policy",
        extra_keys=("persistence",)),
    "mysql": Service(
        "mysql", "command -v mariadbd || command -v mysqld", _mysql_rule,
        [("mysql.cnf.j2", _in_first_dir("99-cvm-tune.cnf", "/etc/mysql/mariadb.conf.d",
                                        "/etc/mysql/mysql.conf.d", "/etc/my.cnf.d",
                                        "/etc/mysql/conf.d"))],
        check="d=$(command -v mariadbd || command -v mysqld); if $d --help 2>/dev/null | grep "
              "-q validate-config; then $d --validate-config; else $d --help --verbose "
              ">/dev/null; fi",
        reload=lambda s: "mysql -e 'SET GLOBAL innodb_buffer_pool_size=%d; SET GLOBAL "
                         "max_connections=%d'" % (s["innodb_buffer_pool_size"],
                                                  s["max_connections"]),
        verify=lambda s: "mysql -N -e 'SELECT @@innodb_buffer_pool_size, @@max_connections'"),
    "php-fpm": Service(
        "php-fpm", "ls /usr/sbin/php-fpm* >/dev/null 2>&1", _php_rule,
        [("php-fpm.conf.j2", "d=$(ls -d /etc/php/*/fpm/pool.d 2>/dev/null | tail -1); "
                             "[ -n \"$d\" ] || d=/etc/php-fpm.d; echo $d/zz-cvm-tune.conf")],
        check="$(ls /usr/sbin/php-fpm* | tail -1) -t",
        reload="systemctl reload $(systemctl list-units --plain --no-legend 'php*-fpm*' | "
               "awk '{print $1}' | head -1)",
        extra_keys=("child_mib",)),
    "jvm": Service(
        "jvm", "command -v java", _jvm_rule, [("jvm.env.j2", "echo /etc/cvm/jvm.env")],
        check=". /etc/cvm/jvm.env && export JAVA_TOOL_OPTIONS && java -version",
        extra_keys=("container_aware",)),
}


def known():
    return ", ".join(sorted(SERVICES))


def service_named(name):
    if name not in SERVICES:
        raise SpecError("service", "%r is not a service cvm tunes; known: %s" % (name, known()))
    return SERVICES[name]


def vm_sizes(vm):
    """(cpus, memory bytes) the VM really has, from its cgroup."""
    from .procview.sources import SourceError, VMSource
    try:
        source = VMSource.of_pid(vm.pid)
        return source.cpu_count(), source.memory().total * 1024
    except SourceError as exc:
        raise CvmError("%s: %s" % (vm.name, exc)) from None


def parse_sets(service, pairs):
    """['key=value', ...] -> {key: value}, rejecting keys the service does not have."""
    allowed = set(service.rule(1, 1 << 30, {})) | set(service.extra_keys)
    if service.name == "jvm":
        allowed = set(service.extra_keys) | {"options"}
    overrides = {}
    for pair in pairs:
        key, value = split_key_value("set", pair)
        if key not in allowed:
            raise SpecError("set", "%s has no setting %r; it has %s" % (
                service.name, key, ", ".join(sorted(allowed))))
        overrides[key] = int(value) if value.isdigit() else value
    return overrides


def settings_for(service, cpus, memory, overrides):
    settings = service.rule(cpus, memory, overrides)
    for key, value in overrides.items():
        if key in settings:
            settings[key] = value
    return settings


class Plan:
    """What tuning a service in a VM would write, and how it differs from the VM's files."""

    def __init__(self, service, settings, files):
        self.service = service
        self.settings = settings
        self.files = files  # [(path, new text, current text or None)]

    def diff(self):
        lines = []
        for path, new, current in self.files:
            lines += difflib.unified_diff((current or "").splitlines(True), new.splitlines(True),
                                          path + " (in the VM)", path + " (cvm tune)")
        return "".join(lines)

    @property
    def changed(self):
        return any(new != current for _, new, current in self.files)


def _run(vm, script, input=None, timeout=120):
    code, out, err = vm.exec(["sh", "-c", script], input=input, timeout=timeout)
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def plan(vm, name, overrides=None):
    from .templates import render
    service = service_named(name)
    if not vm.running:
        raise CvmError("VM %s is not running" % vm.name)
    code, _, _ = _run(vm, service.detect)
    if code != 0:
        raise NotFound("%s is not installed in VM %s" % (name, vm.name))
    stored = ((vm.record.get("tune_overrides") or {}).get(name) or {})
    merged = dict(stored, **(overrides or {}))
    cpus, memory = vm_sizes(vm)
    settings = settings_for(service, cpus, memory, merged)
    values = dict(settings, settings=settings, cpus=cpus, memory_mib=memory // MIB)
    files = []
    for template, where in service.files:
        code, out, err = _run(vm, where)
        path = out.strip()
        if code != 0 or not path.startswith("/"):
            raise CvmError("%s: cannot find where %s reads its configuration in VM %s" % (
                name, name, vm.name))
        _, current, _ = _run(vm, "cat %s 2>/dev/null" % shlex.quote(path))
        files.append((path, render("services/" + template, **values), current or None))
    return Plan(service, settings, files), merged


def apply(vm, name, overrides=None, reload=False, ctx=None):
    """Write the plan into the VM, check it, and reload; put the old files back if the
    check or the reload fails. Returns the Plan and what the service reports it uses."""
    result, merged = plan(vm, name, overrides)
    service = result.service
    if service.prepare:
        code, _, err = _run(vm, service.prepare)
        if code != 0:
            raise CvmError("%s: could not hook cvm's include into its configuration: %s" % (
                name, err.strip().splitlines()[-1] if err.strip() else "exit %d" % code))
    backups = []
    for path, new, current in result.files:
        backups.append((path, current))
        code, _, err = _run(vm, "mkdir -p $(dirname %s) && cat > %s" % (
            shlex.quote(path), shlex.quote(path)), input=new.encode())
        if code != 0:
            _restore(vm, backups)
            raise CvmError("%s: cannot write %s: %s" % (name, path, err.strip()))
    steps = []
    if service.check:
        steps.append(("check", service.check))
    if reload and service.reload:
        steps.append(("reload", service.reload(result.settings) if callable(service.reload)
                      else service.reload))
    for what, script in steps:
        code, out, err = _run(vm, script)
        if code != 0:
            _restore(vm, backups)
            detail = (err.strip() or out.strip() or "exit %d" % code).splitlines()[-1]
            raise CvmError("%s: the %s failed, the previous configuration is back: %s" % (
                name, "configuration check" if what == "check" else "reload", detail))
    if ctx is not None:
        record = ctx.store.read_vm(vm.name)
        overrides_all = dict(record.get("tune_overrides") or {})
        overrides_all[name] = merged
        ctx.store.write_vm(vm.name, dict(record, tune_overrides=overrides_all))
    reported = ""
    if reload and service.verify:
        _, reported, _ = _run(vm, service.verify(result.settings))
    return result, reported


def _restore(vm, backups):
    for path, current in backups:
        if current is None:
            _run(vm, "rm -f %s" % shlex.quote(path))
        else:
            _run(vm, "cat > %s" % shlex.quote(path), input=current.encode())
