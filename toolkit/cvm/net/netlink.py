"""rtnetlink through pyroute2, in the host or in a VM's network namespace.

A VM's namespace is entered for one thread only, just long enough to open the
socket (a socket stays bound to the namespace it was made in); this costs well
under a millisecond, where pyroute2's own netns support forks a helper process.

`Netlink.request()` is the single seam every NIC driver sends through, so tests
on hosts without 8021q, ipvlan or SR-IOV can record the exact requests instead.
"""

import contextlib
import ctypes
import fcntl
import os
import socket
import struct

from ..errors import NetError

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8927
_libc = None


def _setns(fd, nstype):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def in_netns(netns_fd):
    """Run the block with this thread inside the given network namespace."""
    if netns_fd is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(netns_fd, CLONE_NEWNET)
        try:
            yield
        finally:
            _setns(own, CLONE_NEWNET)
    finally:
        os.close(own)


def open_netns(pid):
    """An fd of the network namespace of process `pid` (caller closes it)."""
    try:
        return os.open("/proc/%d/ns/net" % pid, os.O_RDONLY)
    except OSError as exc:
        raise NetError("cannot open the network namespace of pid %d: %s" % (pid, exc.strerror)) \
            from None


def write_sysctl(netns_fd, path, value):
    """Write /proc/sys/<path> as seen from a network namespace (None: the host's)."""
    with in_netns(netns_fd):
        fd = os.open("/proc/sys/" + path, os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)


def read_sysctl(netns_fd, path):
    with in_netns(netns_fd):
        with open("/proc/sys/" + path) as handle:
            return handle.read().strip()


class Netlink:
    """One rtnetlink socket, made at its first request. `netns_fd` is None for the
    host."""

    def __init__(self, ipr, netns_fd=None, where="host"):
        self._ipr = ipr
        self.netns_fd = netns_fd
        self.where = where
        self._own_fd = None
        self._nft = None
        self._ioctl_socket = None

    @classmethod
    def open(cls, netns_fd=None, where="host"):
        return cls(None, netns_fd, where)

    @property
    def ipr(self):
        if self._ipr is None:
            from pyroute2 import IPRoute
            with in_netns(self.netns_fd):
                self._ipr = IPRoute()
        return self._ipr

    def close(self):
        if self._ipr is not None:
            self._ipr.close()
        if self._ioctl_socket is not None:
            self._ioctl_socket.close()
        if self._own_fd is not None:
            os.close(self._own_fd)
            self._own_fd = None

    def own_netns_fd(self):
        """An fd of the namespace this socket lives in (to move links back into it)."""
        if self.netns_fd is not None:
            return self.netns_fd
        if self._own_fd is None:
            self._own_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        return self._own_fd

    @contextlib.contextmanager
    def temporary_namespace(self):
        """A fresh, empty network namespace for the duration of the block."""
        import secrets

        from pyroute2 import netns
        name = "cvm-tmp-" + secrets.token_hex(4)
        netns.create(name)
        try:
            fd = os.open(os.path.join(netns.NETNS_RUN_DIR, name), os.O_RDONLY)
            try:
                with Netlink.open(fd, where="temporary namespace") as temp:
                    yield temp
            finally:
                os.close(fd)
        finally:
            netns.remove(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------- the seam

    def request(self, family, command, **kwargs):
        """Send one request: family is link, addr, route, neigh, fdb, brport or
        vlan_filter."""
        return getattr(self.ipr, family)(command, **kwargs)

    def delete_link(self, **which):
        """Delete a link (index= or ifname=); one already gone is not an error: a veth
        goes with its peer's namespace, and racing removals meet here."""
        try:
            self.request("link", "del", **which)
        except Exception as exc:
            if errno_of(exc) != 19:  # ENODEV
                raise

    def nft(self):
        """nftables in this socket's namespace (cvm.net.filtering's seam, as request() is
        the drivers' for rtnetlink)."""
        from .filtering import Nft, host_nft
        if self.netns_fd is None:
            return host_nft()
        if self._nft is None:
            with in_netns(self.netns_fd):
                self._nft = Nft()
        return self._nft

    # ---------------------------------------------------------- lookups

    def link(self, ifname=None, index=None):
        """The link message for a name or index, or None."""
        try:
            if index is None:
                return self.ipr.link("get", ifname=ifname)[0]  # looked up by the kernel
            return self.ipr.link("get", index=index)[0]
        except Exception as exc:
            if getattr(exc, "code", None) == 19:  # ENODEV
                return None
            raise

    def link_state(self, ifname):
        """{"address": MAC, "up": bool} of a link, or None if there is none: two ioctls,
        as ifconfig asks. A listing of hundreds of NICs would spend most of its time in
        pyroute2 decoding every attribute of every link message."""
        if self._ioctl_socket is None:
            with in_netns(self.netns_fd):
                self._ioctl_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        name = ifname.encode()
        try:
            flags = fcntl.ioctl(self._ioctl_socket, SIOCGIFFLAGS, struct.pack("16s24x", name))
            hwaddr = fcntl.ioctl(self._ioctl_socket, SIOCGIFHWADDR, struct.pack("16s24x", name))
        except OSError as exc:
            if exc.errno == 19:  # ENODEV
                return None
            raise NetError("cannot read link %s in the %s namespace: %s" % (
                ifname, self.where, exc.strerror)) from None
        return {"address": ":".join("%02x" % byte for byte in hwaddr[18:24]),
                "up": bool(struct.unpack_from("H", flags, 16)[0] & 1)}

    def link_name(self, index):
        """The name of link `index`, or None if there is none: one ioctl, where a link
        message would be decoded whole."""
        with in_netns(self.netns_fd):
            try:
                return socket.if_indextoname(index)
            except OSError:
                return None

    def index(self, ifname):
        link = self.link(ifname)
        return link["index"] if link is not None else None

    def links(self):
        return list(self.ipr.get_links())

    def addresses(self, index=None):
        """The address messages of one link, or of every link."""
        return list(self.ipr.get_addr(**({} if index is None else {"index": index})))

    def routes(self, family, **filters):
        return list(self.ipr.get_routes(family=family, **filters))

    def flood_remotes(self, index):
        """The remote addresses a VXLAN port floods to (its all-zeros FDB entries)."""
        remotes = []
        for entry in self.ipr.fdb("dump", ifindex=index):
            if entry.get("NDA_LLADDR") == "00:00:00:00:00:00" and entry.get("NDA_DST"):
                remotes.append(entry.get("NDA_DST"))
        return remotes

    def link_with_vfs(self, index):
        """A PF's link message with its VF list (IFLA_VFINFO_LIST)."""
        return self.ipr.link("get", index=index, ext_mask=1)[0]


def link_kind(link):
    info = link.get("IFLA_LINKINFO") if link is not None else None
    return info.get("IFLA_INFO_KIND") if info is not None else None


def is_up(link):
    return bool(link["flags"] & 1)


def errno_of(exc):
    return getattr(exc, "code", None) or getattr(exc, "errno", None)
