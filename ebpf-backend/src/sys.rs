//! The few system calls aya 0.14 does not offer: creating a hash of maps with an inner map
//! template of our choosing (the policy maps' capacity is set at run time), running a program
//! on a crafted packet (`BPF_PROG_TEST_RUN`), checking and mounting bpffs, and interface
//! names. Every `unsafe` block says why it is sound.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;
/// `BPF_FS_MAGIC`, the `f_type` of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `sizeof(struct __sk_buff)`.
const SKB_CTX_SIZE: usize = 192;
/// `offsetof(struct __sk_buff, ifindex)`.
const SKB_CTX_IFINDEX: usize = 40;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`
    // that lives for the whole call; the kernel reads (and for test runs writes) at most
    // `size_of::<T>()` bytes of it and zero-fills the rest of its own copy.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Creates a `BPF_MAP_TYPE_HASH_OF_MAPS` with `u32` keys whose values must look like `inner`.
pub fn create_hash_of_maps(
    name: &str,
    max_entries: u32,
    flags: u32,
    inner: BorrowedFd<'_>,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_HASH_OF_MAPS,
        key_size: 4,
        value_size: 4,
        max_entries,
        map_flags: flags,
        inner_map_fd: u32::try_from(inner.as_raw_fd())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        ..Default::default()
    };
    let n = name.len().min(15);
    attr.map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs a TC program once on an Ethernet frame (`BPF_PROG_TEST_RUN`) and returns its return
/// code. With `ifindex` the packet appears to arrive on that device (it must exist in the
/// caller's network namespace and be above 1); without, on the loopback device (ifindex 1).
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8], ifindex: Option<u32>) -> io::Result<i32> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut ctx = [0u8; SKB_CTX_SIZE];
    if let Some(i) = ifindex {
        ctx[SKB_CTX_IFINDEX..SKB_CTX_IFINDEX + 4].copy_from_slice(&i.to_ne_bytes());
    }
    let len = |n: usize| u32::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        data_size_in: len(frame.len())?,
        data_size_out: len(out.len())?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    if ifindex.is_some() {
        attr.ctx_size_in = len(ctx.len())?;
        attr.ctx_in = ctx.as_ptr() as u64;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval as i32)
}

/// The effective user ID.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `path` is on a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer for the call.
    let ret = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    ret == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Mounts bpffs on `path` (which must exist).
pub fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let src = c"bpf";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; no data.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of a network interface in the caller's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The name of a network interface in the caller's network namespace.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    name.to_str().ok().map(str::to_string)
}

/// Runs `f` on a new thread that has joined the network namespace at `netns` (a file such as
/// `/run/netns/NAME`), and returns its result. The mount namespace is the caller's, so bpffs
/// pins stay visible (unlike `ip netns exec`, which remounts `/sys`).
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: `file` is an open namespace file; setns only changes this thread's
            // network namespace, and the thread ends when `f` returns.
            let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("the thread in the network namespace panicked"))?
    })
}

/// `IP_RECVORIGDSTADDR` / `IPV6_RECVORIGDSTADDR` on a UDP socket: every datagram it receives
/// then carries the destination it was sent to, which for a transparent proxy's socket is
/// the original one ([`recv_with_destination`]).
pub fn set_recv_destination(fd: BorrowedFd<'_>, v6: bool) -> io::Result<()> {
    let (level, name) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR)
    } else {
        (libc::SOL_IP, libc::IP_RECVORIGDSTADDR)
    };
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call and its size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A socket address from a `sockaddr_in` / `sockaddr_in6` at `ptr` of `len` bytes.
///
/// # Safety
/// `ptr` must point at `len` readable bytes.
unsafe fn socket_addr(ptr: *const u8, len: usize) -> Option<std::net::SocketAddr> {
    if len < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the caller gives `len` readable bytes; every read below checks `len` first and
    // is unaligned.
    unsafe {
        let family = std::ptr::read_unaligned(ptr.cast::<libc::sa_family_t>());
        match libc::c_int::from(family) {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                let a = std::ptr::read_unaligned(ptr.cast::<libc::sockaddr_in>());
                Some(std::net::SocketAddr::new(
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                    u16::from_be(a.sin_port),
                ))
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let a = std::ptr::read_unaligned(ptr.cast::<libc::sockaddr_in6>());
                Some(std::net::SocketAddr::new(
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                    u16::from_be(a.sin6_port),
                ))
            }
            _ => None,
        }
    }
}

/// Receives one datagram into `buf` (non-blocking sockets answer `WouldBlock`): its length,
/// its source and, when the socket has [`set_recv_destination`], its original destination.
pub fn recv_with_destination(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, std::net::SocketAddr, Option<std::net::SocketAddr>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut source: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut source as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points at a live buffer of the length given with it.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `msg_namelen` bytes of `source`.
    let from = unsafe {
        socket_addr(
            (&source as *const libc::sockaddr_storage).cast(),
            msg.msg_namelen as usize,
        )
    }
    .ok_or_else(|| io::Error::other("a datagram without a source address"))?;
    let mut destination = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; CMSG_DATA points inside the header's `cmsg_len`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let wanted = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_ORIGDSTADDR)
                || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_ORIGDSTADDR);
            if wanted {
                let header = libc::CMSG_LEN(0) as usize;
                let len = (h.cmsg_len as usize).saturating_sub(header);
                destination = socket_addr(libc::CMSG_DATA(c), len);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, from, destination))
}
