// mcbus/match: match rules, their compilation into classic BPF socket filters, and a classic BPF
// interpreter. Needs the wire codec only: no I/O, no liburing, no fmt, no exceptions, no RTTI.
#pragma once

#include <mcbus/match/bpf.hpp>
#include <mcbus/match/bpf_disasm.hpp>
#include <mcbus/match/bpf_insn.hpp>
#include <mcbus/match/bpf_vm.hpp>
#include <mcbus/match/context.hpp>
#include <mcbus/match/rule.hpp>
