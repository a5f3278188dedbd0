#!/usr/bin/python3
"""Check kiln's NoCloud renderings with Debian's real cloud-init.

Run with PYTHONPATH set to the unpacked cloud-init's dist-packages.

  cloudinit-check.py schema USER_DATA
      validate user-data with cloud-init's cloud-config schema (strict);
      exit 1 with the schema errors.
  cloudinit-check.py network NETWORK_CONFIG
      parse network-config with cloud-init's network_state (v2 parser, broken
      config is an error) and render it with its eni and networkd renderers;
      print JSON {"interfaces": [...], "eni": "...", "networkd": {file: text}}.
  cloudinit-check.py nocloud CMDLINE
      run cloud-init's DataSourceNoCloudNet with CMDLINE as the kernel command
      line (nothing else: no DMI, no seed dir, no devices); it fetches the seed
      from the s= URL; print JSON {"instance_id", "local_hostname",
      "user_data", "seed"}.
  cloudinit-check.py seeddir DIR
      run cloud-init's DataSourceNoCloud on a seed directory DIR/nocloud
      holding meta-data, user-data and network-config, as on a cidata disk;
      print JSON {"instance_id", "local_hostname", "user_data", "network"}
      where network is the network config the datasource hands to cloud-init.
"""
import json
import os
import sys
import tempfile


def schema(path):
    from cloudinit.config import schema as s

    try:
        s.validate_cloudconfig_file(path, s.get_schema())
    except s.SchemaValidationError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"valid": True}))


def network(path):
    from cloudinit import safeyaml
    from cloudinit.net import eni, network_state, networkd

    with open(path) as f:
        cfg = safeyaml.load(f.read())
    ns = network_state.parse_net_config_data(cfg, skip_broken=False)
    ifaces = []
    for i in ns.iter_interfaces():
        ifaces.append(
            {
                "name": i.get("name"),
                "mac_address": i.get("mac_address"),
                "subnets": i.get("subnets", []),
            }
        )
    out = {"interfaces": ifaces, "dns": ns.dns_nameservers}
    with tempfile.TemporaryDirectory() as tmp:
        eni.Renderer().render_network_state(ns, target=tmp)
        with open(os.path.join(tmp, "etc/network/interfaces")) as f:
            out["eni"] = f.read()
        networkd.Renderer().render_network_state(ns, target=tmp)
        out["networkd"] = {}
        d = os.path.join(tmp, "etc/systemd/network")
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name)) as f:
                out["networkd"][name] = f.read()
    print(json.dumps(out, default=str))


def nocloud(cmdline):
    from cloudinit import dmi, helpers, util
    from cloudinit.sources import DataSourceNoCloud as nc

    util.get_cmdline = lambda: cmdline
    dmi.read_dmi_data = lambda key: None
    with tempfile.TemporaryDirectory() as tmp:
        paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
        ds = nc.DataSourceNoCloudNet({}, None, paths)
        ds._get_devices = lambda label: []
        if not ds._get_data():
            print("NoCloudNet did not claim the command line", file=sys.stderr)
            sys.exit(1)
        ud = ds.userdata_raw
        if isinstance(ud, bytes):
            ud = ud.decode()
        print(
            json.dumps(
                {
                    "instance_id": ds.get_instance_id(),
                    "local_hostname": ds.metadata.get("local-hostname"),
                    "user_data": ud,
                    "seed": ds.seed,
                }
            )
        )


def seeddir(seed):
    from cloudinit import dmi, helpers, util
    from cloudinit.sources import DataSourceNoCloud as nc

    util.get_cmdline = lambda: "ro quiet"
    dmi.read_dmi_data = lambda key: None
    with tempfile.TemporaryDirectory() as tmp:
        paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
        os.symlink(seed, paths.seed_dir)  # <cloud_dir>/seed/nocloud
        ds = nc.DataSourceNoCloud({}, None, paths)
        ds._get_devices = lambda label: []
        if not ds._get_data():
            print("NoCloud did not claim the seed directory", file=sys.stderr)
            sys.exit(1)
        ud = ds.userdata_raw
        if isinstance(ud, bytes):
            ud = ud.decode()
        print(
            json.dumps(
                {
                    "instance_id": ds.get_instance_id(),
                    "local_hostname": ds.metadata.get("local-hostname"),
                    "user_data": ud,
                    "network": ds.network_config,
                }
            )
        )


if __name__ == "__main__":
    {"schema": schema, "network": network, "nocloud": nocloud, "seeddir": seeddir}[sys.argv[1]](
        sys.argv[2]
    )
