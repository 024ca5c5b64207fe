"""The `cvm` command. Light on purpose: the launcher imports cvm.cli.args and
cvm.cli.served for every short command; the click CLI is in cvm.cli.main."""
