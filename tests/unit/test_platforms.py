"""Architecture names (labctl.platforms): uname -m, Docker's names, ELF headers."""

from __future__ import annotations

import struct

import pytest

from labctl.platforms import describe, docker_arch, elf_arch


@pytest.mark.parametrize(
    ("machine", "arch"),
    [("x86_64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64"), ("armv7l", "arm"),
     ("x86_64\n", "amd64"), ("riscv64", "riscv64")],
)  # fmt: skip
def test_uname_machine_to_docker_arch(machine, arch):
    assert docker_arch(machine) == arch


@pytest.mark.parametrize(
    ("machine", "byte_order", "arch"),
    [
        (0x3E, "<", "amd64"),
        (0xB7, "<", "arm64"),
        (0x28, "<", "arm"),
        (0x15, "<", "ppc64le"),
        (0xB7, ">", "arm64"),
    ],
)
def test_an_elf_header_names_its_architecture(tmp_path, machine, byte_order, arch):
    binary = tmp_path / "bin"
    ei_data = b"\x01" if byte_order == "<" else b"\x02"
    header = (
        b"\x7fELF\x02" + ei_data + b"\x01" + bytes(9) + struct.pack(f"{byte_order}HH", 2, machine)
    )
    binary.write_bytes(header + bytes(44))
    assert elf_arch(binary) == arch


def test_a_script_or_a_short_file_has_no_elf_architecture(tmp_path):
    (tmp_path / "script").write_bytes(b"#!/bin/sh\necho consul-template\n")
    (tmp_path / "short").write_bytes(b"\x7fELF")
    assert elf_arch(tmp_path / "script") is None
    assert elf_arch(tmp_path / "short") is None


def test_describe_names_the_hosts_of_one_architecture():
    arches = {"m1": "amd64", "m2": "arm64", "m3": "amd64"}
    assert describe(arches, "amd64") == "m1, m3 run amd64"
    assert describe(arches, "arm64") == "m2 runs arm64"
