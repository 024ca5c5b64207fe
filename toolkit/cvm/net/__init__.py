"""Static-IP networking from the host: one driver per NIC mode behind one interface
(cvm.net.base). This package's top holds only the registry of modes, so that the spec
can read each mode's options from its driver; cvm.net.wiring wires whole VMs."""

from .bridge import BridgeDriver
from .ipvlan import IpvlanDriver
from .macvlan import MacvlanDriver
from .routed import RoutedDriver
from .sriov import SriovDriver

DRIVERS = {driver.mode: driver for driver in (BridgeDriver(), RoutedDriver(), MacvlanDriver(),
                                              IpvlanDriver(), SriovDriver())}
