"""A fake `VBoxManage` for driving Vagrant's own VirtualBox provider where VirtualBox is
absent. It records every call (one JSON line: argv) and answers the subcommands that
`vagrant up` sends like VirtualBox 6.1, 7.0 or 7.1 on Linux or macOS, keeping the state
(host-only interfaces and networks, VMs) in a JSON file between calls.

It is never kinder than VirtualBox where the lab meets it:
- `hostonlyif ipconfig` refuses an address outside the host-only ranges (192.168.56.0/21,
  or those in /etc/vbox/networks.conf) with VirtualBox's own E_ACCESSDENIED message, as
  VirtualBox does from 6.1.28 on (VirtualBox manual, "Host-Only Networking"; the message
  as users report it, e.g. hashicorp/vagrant#13038);
- a netmask must be a dotted IPv4 mask, `--netmask 24` is refused;
- `hostonlynet` and `list hostonlynets` exist from 7.0 on only, and on macOS with 7.x
  there are no host-only interfaces, only host-only networks (what Vagrant's
  driver/version_7_0.rb `use_host_only_nets?` assumes);
- VM names are unique (`modifyvm --name` fails with VERR_ALREADY_EXISTS, which Vagrant's
  driver/version_5_0.rb `set_name` turns into VirtualBoxNameExists);
- an unknown subcommand or `modifyvm` option is a syntax error (exit 2).
Output formats follow VirtualBox's, as the parsers in Vagrant's driver/version_5_0.rb,
version_6_0.rb (`import`) and version_7_0.rb read them.

Environment: FAKE_VBOX_DIR (state and machine folder), FAKE_VBOX_LOG (the call log),
FAKE_VBOX_VERSION (6.1, 7.0, 7.1), FAKE_VBOX_HOST (linux or darwin).

`main()` is run by a `VBoxManage` wrapper on PATH (tests/support/virtualbox_harness.py).
`vagrant up` calls it about 40 times per machine, so it imports little (no pathlib,
uuid; ipaddress only when it checks an address).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys

RELEASES = {"6.1": "6.1.50r161033", "7.0": "7.0.20r163906", "7.1": "7.1.4r165100"}
DEFAULT_HOSTONLY_RANGES = ["192.168.56.0/21"]
NETWORKS_CONF = "/etc/vbox/networks.conf"
NOT_FOUND = "VBOX_E_OBJECT_NOT_FOUND (0x80bb0001)"

# modifyvm options Vagrant's up sends, with the values VirtualBox accepts.
MODIFYVM_OPTIONS = {
    r"--name": r".+",
    r"--macaddress1": r"auto|[0-9A-Fa-f]{12}",
    r"--nic\d": r"none|null|nat|bridged|intnet|hostonly|hostonlynet|natnetwork|generic",
    r"--nictype\d": r"Am79C970A|Am79C973|82540EM|82543GC|82545EM|virtio",
    r"--cableconnected\d": r"on|off",
    r"--hostonlyadapter\d": r".+",
    r"--host-only-net\d": r".+",
    r"--natpf\d": r"[^,]+,(tcp|udp),[^,]*,\d+,[^,]*,\d+",
    r"--cpus": r"\d+",
    r"--memory": r"\d+",
    r"--rtcuseutc": r"on|off",
    r"--natdnsproxy1": r"on|off",
    r"--natdnshostresolver1": r"on|off",
}


PROGRESS = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"


def new_uuid() -> str:
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def read(path: str) -> str:
    with open(path) as file:
        return file.read()


class Failure(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def syntax_error(message: str) -> Failure:
    return Failure(f"VBoxManage: error: {message}\nSyntax error: {message}", 2)


class Fake:
    def __init__(self, state_dir: str, release: str, host: str):
        self.release = release
        self.minor = tuple(int(p) for p in release.split(".")[:2])
        self.host = host
        self.machine_folder = os.path.join(state_dir, "VirtualBox VMs")
        self.state_file = os.path.join(state_dir, "state.json")
        self.state = (
            json.loads(read(self.state_file))
            if os.path.exists(self.state_file)
            else {"hostonlyifs": [], "hostonlynets": [], "vms": {}}
        )

    def save(self) -> None:
        with open(self.state_file, "w") as file:
            json.dump(self.state, file, indent=1)

    # -- checks VirtualBox makes ------------------------------------------------------
    @staticmethod
    def ipv4(text: str, what: str):
        import ipaddress

        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            raise Failure(f"VBoxManage: error: Invalid {what} '{text}'") from None

    def netmask(self, text: str) -> str:
        import ipaddress

        if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", text):
            raise Failure(f"VBoxManage: error: Invalid netmask '{text}'")
        try:
            ipaddress.IPv4Network(f"0.0.0.0/{text}")
        except ValueError:
            raise Failure(f"VBoxManage: error: Invalid netmask '{text}'") from None
        return text

    def check_hostonly_range(self, address) -> None:
        import ipaddress

        ranges = DEFAULT_HOSTONLY_RANGES
        if os.path.exists(NETWORKS_CONF):
            ranges = [
                entry
                for line in read(NETWORKS_CONF).splitlines()
                if line.strip().startswith("*")
                for entry in line.strip()[1:].split()
            ]
        if not any(address in ipaddress.ip_network(r, strict=False) for r in ranges):
            raise Failure(
                "VBoxManage: error: Code E_ACCESSDENIED (0x80070005) - Access denied "
                "(extended info not available)\nVBoxManage: error: Context: "
                '"EnableStaticIPConfig(Bstr(pszIp).raw(), Bstr(pszNetmask).raw())" at line '
                "242 of file VBoxManageHostonly.cpp"
            )

    def vm(self, ref: str) -> dict:
        for vm_id, vm in self.state["vms"].items():
            if ref in (vm_id, vm["name"]):
                return vm
        raise Failure(
            f"VBoxManage: error: Could not find a registered machine named '{ref}'\n"
            f"VBoxManage: error: Details: code {NOT_FOUND}, component VirtualBoxWrap, "
            "interface IVirtualBox, callee nsISupports"
        )

    # -- subcommands ---------------------------------------------------------------------
    def run(self, argv: list[str]) -> str:
        if argv in (["--version"], ["-v"]):
            return RELEASES[self.release] + "\n"
        if not argv:
            raise syntax_error("no subcommand")
        handler = getattr(self, "cmd_" + argv[0].replace("-", "_"), None)
        if handler is None:
            raise syntax_error(f"Invalid command '{argv[0]}'")
        return handler(argv[1:])

    def cmd_list(self, args: list[str]) -> str:
        what = args[0] if args else ""
        if what == "hostonlyifs":
            if self.host == "darwin" and self.minor >= (7, 0):
                return ""
            return "\n".join(self.hostonlyif_block(i) for i in self.state["hostonlyifs"])
        if what == "hostonlynets":
            if self.minor < (7, 0):
                raise syntax_error("Invalid parameter 'hostonlynets'")
            return "\n".join(self.hostonlynet_block(n) for n in self.state["hostonlynets"])
        if what == "dhcpservers":
            return ""
        if what == "bridgedifs":
            return (
                "Name:            eth0\nGUID:            00000000-0000-0000-0000-000000000001\n"
                "DHCP:            Disabled\nIPAddress:       10.0.2.15\n"
                "NetworkMask:     255.255.255.0\nIPV6Address:     \n"
                "IPV6NetworkMaskPrefixLength: 0\nHardwareAddress: 52:54:00:12:34:56\n"
                "MediumType:      Ethernet\nWireless:        No\nStatus:          Up\n"
                "VBoxNetworkName: HostInterfaceNetworking-eth0\n\n"
            )
        if what in ("vms", "runningvms"):
            return "".join(
                f'"{vm["name"]}" {{{vm_id}}}\n'
                for vm_id, vm in self.state["vms"].items()
                if what == "vms" or vm["state"] == "running"
            )
        if what == "systemproperties":
            return (
                f"API version:                     {self.release.replace('.', '_')[:3]}\n"
                f"Default machine folder:          {self.machine_folder}\n"
            )
        raise syntax_error(f"Invalid parameter '{what}'")

    @staticmethod
    def hostonlyif_block(interface: dict) -> str:
        return (
            f"Name:            {interface['name']}\n"
            "GUID:            786f6276-656e-4074-8000-0a0027000000\nDHCP:            Disabled\n"
            f"IPAddress:       {interface['ip']}\nNetworkMask:     {interface['netmask']}\n"
            "IPV6Address:     \nIPV6NetworkMaskPrefixLength: 0\n"
            "HardwareAddress: 0a:00:27:00:00:00\nMediumType:      Ethernet\n"
            "Wireless:        No\nStatus:          Up\n"
            f"VBoxNetworkName: HostInterfaceNetworking-{interface['name']}\n"
        )

    @staticmethod
    def hostonlynet_block(net: dict) -> str:
        return (
            f"Name:            {net['name']}\nGUID:            {net['guid']}\n"
            f"State:           Enabled\nNetworkMask:     {net['netmask']}\n"
            f"LowerIP:         {net['lower']}\nUpperIP:         {net['upper']}\n"
            f"VBoxNetworkName: hostonly-{net['name']}\n"
        )

    def cmd_hostonlyif(self, args: list[str]) -> str:
        if self.host == "darwin" and self.minor >= (7, 0):
            raise Failure(
                "VBoxManage: error: Failed to create the host-only adapter\n"
                "VBoxManage: error: VBoxNetAdpCtl: Error while adding new interface: "
                "failed to open /dev/vboxnetctl: No such file or directory"
            )
        if args == ["create"]:
            name = f"vboxnet{len(self.state['hostonlyifs'])}"
            self.state["hostonlyifs"].append({"name": name, "ip": "", "netmask": ""})
            return f"0%...10%...20%...100%\nInterface '{name}' was successfully created\n"
        if len(args) >= 2 and args[0] == "ipconfig":
            interface = next((i for i in self.state["hostonlyifs"] if i["name"] == args[1]), None)
            if interface is None:
                raise Failure(f"VBoxManage: error: Could not find interface '{args[1]}'")
            options = self.options(args[2:], {"--ip", "--netmask", "--ipv6", "--netmasklengthv6"})
            if "--ip" in options:
                address = self.ipv4(options["--ip"], "IP address")
                self.check_hostonly_range(address)
                interface["ip"] = str(address)
                interface["netmask"] = self.netmask(options.get("--netmask", "255.255.255.0"))
            return ""
        raise syntax_error(f"Invalid hostonlyif arguments {args}")

    def cmd_hostonlynet(self, args: list[str]) -> str:
        if self.minor < (7, 0):
            raise syntax_error("Invalid command 'hostonlynet'")
        if args[:1] == ["add"]:
            options = self.options(
                args[1:], {"--name", "--netmask", "--lower-ip", "--upper-ip", "--enable"}
            )
            for required in ("--name", "--netmask", "--lower-ip", "--upper-ip"):
                if required not in options:
                    raise syntax_error(f"hostonlynet add needs {required}")
            if any(n["name"] == options["--name"] for n in self.state["hostonlynets"]):
                raise Failure("VBoxManage: error: Host-only network already exists")
            self.state["hostonlynets"].append(
                {
                    "name": options["--name"],
                    "guid": new_uuid(),
                    "netmask": self.netmask(options["--netmask"]),
                    "lower": str(self.ipv4(options["--lower-ip"], "lower IP")),
                    "upper": str(self.ipv4(options["--upper-ip"], "upper IP")),
                }
            )
            return ""
        raise syntax_error(f"Invalid hostonlynet arguments {args}")

    @staticmethod
    def options(args: list[str], known: set[str]) -> dict[str, str]:
        if len(args) % 2:
            raise syntax_error(f"option without a value in {args}")
        pairs = dict(zip(args[::2], args[1::2], strict=True))
        for key in pairs:
            if key not in known:
                raise syntax_error(f"Unknown option: {key}")
        return pairs

    def cmd_import(self, args: list[str]) -> str:
        dry_run = args[:1] in (["-n"], ["--dry-run"])
        ovf = args[1] if dry_run else args[0]
        if not os.path.isfile(ovf):
            raise Failure(
                f"VBoxManage: error: Appliance read failed\nVBoxManage: error: File "
                f"{ovf} not found (VERR_FILE_NOT_FOUND)"
            )
        text = read(ovf)
        suggested = re.search(r'<VirtualSystem ovf:id="([^"]+)"', text)[1]
        disks = re.findall(r'<File ovf:href="([^"]+)"', text)
        if dry_run:
            # From 6.0 on the disk target is a bare file name, placed beside the settings file.
            settings = os.path.join(self.machine_folder, suggested, f"{suggested}.vbox")
            lines = [
                f"Interpreting {ovf}...",
                "OK.",
                "Virtual system 0:",
                ' 0: Suggested OS type: "Debian_64"',
                f' 1: Suggested VM name "{suggested}"',
                ' 2: Suggested VM group "/"',
                f' 3: Suggested VM settings file name "{settings}"',
                f' 4: Suggested VM base folder "{self.machine_folder}"',
            ]
            lines += [
                f" {9 + i}: Hard disk image: source image={disk}, target path={disk}, "
                "controller=7;channel=0"
                for i, disk in enumerate(disks)
            ]
            return "\n".join(lines) + "\n"
        rest = args[1:]
        name = rest[rest.index("--vmname") + 1]
        for i, arg in enumerate(rest):
            if arg == "--disk" and not os.path.isabs(rest[i + 1]):
                # VirtualBox would write the disk relative to its working directory.
                raise Failure(f"VBoxManage: error: disk target {rest[i + 1]} is not absolute")
        if any(vm["name"] == name for vm in self.state["vms"].values()):
            raise Failure(f"VBoxManage: error: Machine '{name}' already exists")
        vm_id = new_uuid()
        cfg = os.path.join(self.machine_folder, name, f"{name}.vbox")
        os.makedirs(os.path.dirname(cfg), exist_ok=True)
        with open(cfg, "w") as file:
            file.write("<VirtualBox/>\n")
        self.state["vms"][vm_id] = {
            "name": name,
            "state": "poweroff",
            "cfg": cfg,
            # VirtualBox gives every imported NIC a MAC of its OUI 08:00:27.
            "settings": {"--nic1": "nat", "--cpus": "1", "--memory": "512",
                         "--macaddress1": "080027" + vm_id.replace("-", "")[:6].upper()},
            "forwarding": [],
        }
        return "Successfully imported the appliance.\n"

    def cmd_modifyvm(self, args: list[str]) -> str:
        vm = self.vm(args[0])
        if vm["state"] == "running":
            raise Failure(
                "VBoxManage: error: The machine is not mutable (state is Running)\n"
                "VBoxManage: error: Details: code VBOX_E_INVALID_VM_STATE (0x80bb0002)"
            )
        rest = args[1:]
        i = 0
        while i < len(rest):
            key = rest[i]
            if i + 1 >= len(rest):
                raise syntax_error(f"Missing argument to '{key}'")
            value = rest[i + 1]
            if key.startswith("--natpf") and value == "delete":
                name = rest[i + 2]
                vm["forwarding"] = [f for f in vm["forwarding"] if f.split(",")[0] != name]
                i += 3
                continue
            pattern = next((v for k, v in MODIFYVM_OPTIONS.items() if re.fullmatch(k, key)), None)
            if pattern is None:
                raise syntax_error(f"Unknown option: {key}")
            if not re.fullmatch(pattern, value):
                raise Failure(f"VBoxManage: error: Invalid {key} argument '{value}'")
            self.apply_setting(vm, key, value)
            i += 2
        return ""

    def apply_setting(self, vm: dict, key: str, value: str) -> None:
        if key == "--name":
            if any(v["name"] == value and v is not vm for v in self.state["vms"].values()):
                raise Failure(
                    f"VBoxManage: error: Could not rename the directory '{vm['name']}' to "
                    f"'{value}' to save the settings file (VERR_ALREADY_EXISTS)"
                )
            vm["name"] = value
        elif key.startswith("--natpf"):
            vm["forwarding"].append(value)
        elif key.startswith("--hostonlyadapter"):
            if (self.host == "darwin" and self.minor >= (7, 0)) or not any(
                i["name"] == value for i in self.state["hostonlyifs"]
            ):
                raise Failure(f"VBoxManage: error: Host-only interface '{value}' not found")
        elif key.startswith("--host-only-net"):
            if self.minor < (7, 0):
                raise syntax_error(f"Unknown option: {key}")
            if not any(n["name"] == value for n in self.state["hostonlynets"]):
                raise Failure(f"VBoxManage: error: Host-only network '{value}' not found")
        vm["settings"][key] = value

    def cmd_showvminfo(self, args: list[str]) -> str:
        vm = self.vm(args[0])
        if "--machinereadable" not in args[1:]:
            return f"Name:            {vm['name']}\nState:           {vm['state']}\n"
        vm_id = next(k for k, v in self.state["vms"].items() if v is vm)
        lines = [
            f'name="{vm["name"]}"',
            f'UUID="{vm_id}"',
            f'CfgFile="{vm["cfg"]}"',
            f'VMState="{vm["state"]}"',
            f"cpus={vm['settings']['--cpus']}",
            f"memory={vm['settings']['--memory']}",
        ]
        settings = vm["settings"]
        for slot in range(1, 9):
            nic = settings.get(f"--nic{slot}", "none")
            shown = "hostonlynetwork" if nic == "hostonlynet" else nic
            lines.append(f'nic{slot}="{shown}"')
            if nic != "none" and f"--macaddress{slot}" in settings:
                lines.append(f'macaddress{slot}="{settings[f"--macaddress{slot}"]}"')
            if nic == "hostonly":
                lines.append(f'hostonlyadapter{slot}="{settings[f"--hostonlyadapter{slot}"]}"')
            if nic == "hostonlynet":
                lines.append(f'hostonly-network{slot}="{settings[f"--host-only-net{slot}"]}"')
            if slot == 1:
                lines += [f'Forwarding({n})="{rule}"' for n, rule in enumerate(vm["forwarding"])]
        return "\n".join(lines) + "\n"

    def cmd_startvm(self, args: list[str]) -> str:
        vm = self.vm(args[0])
        if args[1:] not in ([], ["--type", "headless"], ["--type", "gui"]):
            raise syntax_error(f"Invalid startvm arguments {args[1:]}")
        for slot in range(1, 9):
            nic = vm["settings"].get(f"--nic{slot}")
            if nic == "hostonly" and f"--hostonlyadapter{slot}" not in vm["settings"]:
                raise Failure("VBoxManage: error: Nonexistent host networking interface, name ''")
        vm["state"] = "running"
        return (
            f'Waiting for VM "{vm["name"]}" to power on...\n'
            f'VM "{vm["name"]}" has been successfully started.\n'
        )

    def cmd_controlvm(self, args: list[str]) -> str:
        """`controlvm VM poweroff` (Vagrant's forced halt); VirtualBox refuses it on a
        machine that is not running."""
        vm = self.vm(args[0])
        if args[1:] != ["poweroff"]:
            raise syntax_error(f"Invalid controlvm arguments {args[1:]}")
        if vm["state"] != "running":
            raise Failure(
                f"VBoxManage: error: Machine '{vm['name']}' is not currently running"
            )
        vm["state"] = "poweroff"
        return PROGRESS

    def cmd_export(self, args: list[str]) -> str:
        """`export VM --output FILE.ovf`: the OVF and its disk beside it, as `import`
        reads them. VirtualBox exports only a machine that is powered off or saved."""
        vm = self.vm(args[0])
        output = self.options(args[1:], {"--output", "-o"})
        ovf = output.get("--output") or output.get("-o")
        if not ovf or not ovf.endswith(".ovf"):
            raise syntax_error("export needs --output FILE.ovf")
        if vm["state"] not in ("poweroff", "saved", "aborted"):
            raise Failure(
                f"VBoxManage: error: Machine '{vm['name']}' is running; power it off to export"
            )
        disk = os.path.basename(ovf).removesuffix(".ovf") + "-disk001.vmdk"
        with open(ovf, "w") as file:
            file.write(
                '<?xml version="1.0"?>\n<Envelope ovf:version="1.0" '
                'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">\n'
                f'  <References><File ovf:href="{disk}" ovf:id="file1"/></References>\n'
                f'  <VirtualSystem ovf:id="{vm["name"]}"/>\n</Envelope>\n'
            )
        with open(os.path.join(os.path.dirname(ovf), disk), "wb") as file:
            file.write(b"")
        return PROGRESS + "Successfully exported 1 machine(s).\n"

    def cmd_guestproperty(self, args: list[str]) -> str:
        self.vm(args[1])
        return "No value set!\n"


def main() -> int:
    state_dir = os.environ["FAKE_VBOX_DIR"]
    argv = sys.argv[1:]
    with open(os.path.join(state_dir, "calls.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.environ["FAKE_VBOX_LOG"], "a") as log:
            log.write(json.dumps(argv) + "\n")
        host = os.environ.get("FAKE_VBOX_HOST", "linux")
        fake = Fake(state_dir, os.environ["FAKE_VBOX_VERSION"], host)
        try:
            sys.stdout.write(fake.run(argv))
        except Failure as failure:
            sys.stderr.write(str(failure) + "\n")
            return failure.code
        fake.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
