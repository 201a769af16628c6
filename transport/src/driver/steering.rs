//! Steering datagrams to the event loop that owns their connection, in the kernel.
//!
//! A server with N loops binds N UDP sockets to one address with `SO_REUSEPORT`
//! ([`super::workers`]). Left alone, the kernel picks a socket by a hash of the
//! 4-tuple, which breaks as soon as a client's address changes (NAT rebinding,
//! migration) and ignores which loop holds the connection. This module builds a
//! classic BPF program for `SO_ATTACH_REUSEPORT_CBPF` that returns the socket index
//! (the order the sockets joined the group, i.e. the worker index) computed from the
//! destination connection ID, the same function as [`CidLayout::steer`]:
//!
//! - short header: the worker byte of our connection ID, modulo N;
//! - long header whose DCID has our length and first octet: its worker byte, modulo N;
//! - any other long header (a client's first flight): the four bytes from the start
//!   of the DCID, big-endian, modulo N, so both datagrams of a two-datagram first flight (same DCID) reach the
//!   same loop, and that loop then issues IDs carrying its own index.
//!
//! A program sees the datagram from the UDP payload on (the kernel pulls the UDP
//! header before running it, `reuseport_select_sock` in net/core/sock_reuseport.c); a
//! load past the end makes it return 0 (socket 0), and an index of N or more makes the
//! kernel fall back to its hash. Classic BPF is enough: no extra toolchain, no
//! privileges beyond owning the socket.

use std::io;

use crate::proto::CidLayout;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

// Opcodes (linux/bpf_common.h).
const LD_B_ABS: u16 = 0x10 | 0x20; // BPF_LD (0) | BPF_B | BPF_ABS
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const MOD_K: u16 = 0x04 | 0x90; // BPF_ALU | BPF_MOD | BPF_K
const RET_A: u16 = 0x06 | 0x10; // BPF_RET | BPF_A

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The steering program for `workers` loops issuing IDs of `layout`. See the
/// [module documentation](self).
pub fn reuseport_program(layout: &CidLayout, workers: usize) -> Vec<Insn> {
    let n = workers.max(1) as u32;
    let at = layout.worker_offset() as u32;
    vec![
        // 0: A = first byte; long header?
        insn(LD_B_ABS, 0, 0, 0),
        insn(JSET_K, 3, 0, 0x80),
        // 2: short header: the worker byte after the 1-byte header.
        insn(LD_B_ABS, 0, 0, 1 + at),
        insn(MOD_K, 0, 0, n),
        insn(RET_A, 0, 0, 0),
        // 5: long header: our DCID length and first octet?
        insn(LD_B_ABS, 0, 0, 5),
        insn(JEQ_K, 0, 5, layout.len() as u32),
        insn(LD_B_ABS, 0, 0, 6),
        insn(JEQ_K, 0, 3, u32::from(layout.first_octet())),
        // 9: ours: its worker byte.
        insn(LD_B_ABS, 0, 0, 6 + at),
        insn(MOD_K, 0, 0, n),
        insn(RET_A, 0, 0, 0),
        // 12: the client's: a hash of the DCID (its first four bytes).
        insn(LD_W_ABS, 0, 0, 6),
        insn(MOD_K, 0, 0, n),
        insn(RET_A, 0, 0, 0),
    ]
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the `libc` crate lists it for
/// Android only).
#[cfg(target_os = "linux")]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches `program` to the reuseport group of `socket` (one socket of the group is
/// enough). Fails with the kernel's error (EPERM, ENOPROTOOPT on old kernels, EINVAL
/// for a program the verifier refuses).
#[cfg(target_os = "linux")]
pub fn attach(socket: &impl std::os::fd::AsRawFd, program: &[Insn]) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: a valid descriptor; `prog` and the instructions it points to outlive
    // the call (the kernel copies them), and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere there is no reuseport BPF: datagrams are forwarded between loops.
#[cfg(not(target_os = "linux"))]
pub fn attach(_socket: &impl std::os::fd::AsRawFd, _program: &[Insn]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_ATTACH_REUSEPORT_CBPF is Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_crypto::random::{OsRandom, Random};

    /// Runs the instructions this module emits, as the kernel would on `d`
    /// (the UDP payload); a load past the end returns 0, as in the kernel.
    fn run(program: &[Insn], d: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        while pc < program.len() {
            let i = program[pc];
            pc += 1;
            match i.code {
                LD_B_ABS => match d.get(i.k as usize) {
                    Some(&b) => a = u32::from(b),
                    None => return 0,
                },
                LD_W_ABS => match d.get(i.k as usize..i.k as usize + 4) {
                    Some(w) => a = u32::from_be_bytes(w.try_into().unwrap()),
                    None => return 0,
                },
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                MOD_K => a %= i.k,
                RET_A => return a,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("fell off the end of the program");
    }

    #[test]
    fn program_computes_what_the_layout_says() {
        let rng = OsRandom::new();
        for workers in [1usize, 2, 3, 8] {
            let base = CidLayout::new(&[0x0a, 0x01], 9).unwrap();
            let prog = reuseport_program(&base, workers);
            for w in 0..workers as u8 {
                let cid = base.clone().for_worker(w).generate(&rng).unwrap();
                let mut short = vec![0x41];
                short.extend_from_slice(cid.as_ref());
                short.extend_from_slice(&[0; 24]);
                assert_eq!(run(&prog, &short) as usize, usize::from(w));
                assert_eq!(base.steer(&short, workers), Some(usize::from(w)));
                let mut long = vec![0xe0, 0, 0, 0, 1, cid.len() as u8];
                long.extend_from_slice(cid.as_ref());
                long.extend_from_slice(&[0; 40]);
                assert_eq!(run(&prog, &long) as usize, usize::from(w));
                assert_eq!(base.steer(&long, workers), Some(usize::from(w)));
            }
            // A client's DCID: the same loop for the same DCID, within range.
            for _ in 0..64 {
                let mut dcid = [0u8; 8];
                rng.fill(&mut dcid).unwrap();
                let mut first = vec![0xc0, 0, 0, 0, 1, 8];
                first.extend_from_slice(&dcid);
                first.extend_from_slice(&[8; 1200]);
                let mut second = first.clone();
                second[20..].fill(0x33);
                let i = run(&prog, &first);
                assert!((i as usize) < workers);
                assert_eq!(i, run(&prog, &second));
                assert_eq!(base.steer(&first, workers), Some(i as usize));
            }
            // Truncated datagrams: socket 0 (the layout: no owner), never a panic.
            for junk in [&[][..], &[0x40][..], &[0xc0, 0, 0, 0, 1, 8, 1][..]] {
                assert_eq!(run(&prog, junk), 0);
                assert_eq!(base.steer(junk, workers), None);
            }
        }
    }
}
