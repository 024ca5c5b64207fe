"""free, top, mpstat, uptime and vmstat that read the VM's cgroup instead of the host's.

Standard library only and Python 3.6-compatible: these run inside VMs on the image's
python3 (CentOS 7's included). The host runs the same code through `cvm free NAME`.
"""
