from edgekit.runtime.environment import _parse_cpuinfo, cpu_info, package_versions

X86 = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
"""
ARM = """processor\t: 0
Features\t: fp asimd evtstrm aes asimddp i8mm
CPU implementer\t: 0x41
"""


def test_parses_x86_and_arm_cpuinfo():
    assert _parse_cpuinfo(X86) == ("AMD EPYC 9R14 96-Core Processor",
                                   {"fpu", "sse", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"})
    assert {"asimddp", "i8mm"} <= _parse_cpuinfo(ARM)[1]


def test_this_machine_is_described():
    info = cpu_info()
    assert info["name"] and info["logical_cores"] >= 1 and info["instruction_sets"]
    assert {"torch", "onnxruntime", "onnx", "transformers"} <= set(package_versions())
