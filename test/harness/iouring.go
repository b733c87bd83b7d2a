package harness

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNoIOUring: the kernel does not let this process use io_uring
// (kernel.io_uring_disabled, seccomp), so an agent cannot either.
var ErrNoIOUring = errors.New("io_uring not available")

// io_uring ABI (include/uapi/linux/io_uring.h).
const (
	ioringSetupSQPoll   = 1 << 1
	ioringEnterGetEvent = 1 << 0
	ioringEnterSQWakeup = 1 << 1
	ioringOpConnect     = 16
	iosqeAsync          = 1 << 4
	ioringOffSQRing     = 0
	ioringOffCQRing     = 0x8000000
	ioringOffSQEs       = 0x10000000
)

type ioSQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type ioCQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type ioUringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  ioSQRingOffsets
	CQOff                                                                  ioCQRingOffsets
}

type ioUringSQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	Pad         uint64
}

type ioUringCQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// dialIOUring connects a TCP socket to an IPv4 address with an io_uring
// IORING_OP_CONNECT, never calling connect(2): mode "inline" (the
// submitting task), "async" (an io-wq worker thread, IOSQE_ASYNC) or
// "sqpoll" (a kernel thread polling the ring). The cgroup hooks must see
// the agent in every case.
func dialIOUring(addr, mode string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	var p ioUringParams
	if mode == "sqpoll" {
		p.Flags = ioringSetupSQPoll
		p.SQThreadIdle = 2000
	}
	rfd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		if errno == unix.ENOSYS || errno == unix.EPERM {
			return nil, fmt.Errorf("%w: %v", ErrNoIOUring, errno)
		}
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	ring := int(rfd)
	defer unix.Close(ring)
	mmap := func(off int64, size int) ([]byte, error) {
		return unix.Mmap(ring, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	}
	sq, err := mmap(ioringOffSQRing, int(p.SQOff.Array+p.SQEntries*4))
	if err != nil {
		return nil, fmt.Errorf("mmap sq ring: %w", err)
	}
	defer unix.Munmap(sq)
	cq, err := mmap(ioringOffCQRing, int(p.CQOff.CQEs+p.CQEntries*uint32(unsafe.Sizeof(ioUringCQE{}))))
	if err != nil {
		return nil, fmt.Errorf("mmap cq ring: %w", err)
	}
	defer unix.Munmap(cq)
	sqes, err := mmap(ioringOffSQEs, int(p.SQEntries*uint32(unsafe.Sizeof(ioUringSQE{}))))
	if err != nil {
		return nil, fmt.Errorf("mmap sqes: %w", err)
	}
	defer unix.Munmap(sqes)

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	// The address lives outside Go's memory: the kernel may read it after
	// io_uring_enter returns (an SQPOLL thread), when a goroutine stack
	// could have moved.
	page, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(page)
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&page[0]))
	*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
	sa.Port = uint16(ap.Port())<<8 | uint16(ap.Port())>>8 // network byte order
	sqe := (*ioUringSQE)(unsafe.Pointer(&sqes[0]))
	*sqe = ioUringSQE{Opcode: ioringOpConnect, Fd: int32(fd), Addr: uint64(uintptr(unsafe.Pointer(sa))), Off: uint64(unsafe.Sizeof(*sa))}
	if mode == "async" {
		sqe.Flags = iosqeAsync
	}
	(*[1 << 20]uint32)(unsafe.Pointer(&sq[p.SQOff.Array]))[0] = 0
	tail := (*uint32)(unsafe.Pointer(&sq[p.SQOff.Tail]))
	atomic.AddUint32(tail, 1)

	toSubmit, flags := uintptr(1), uintptr(ioringEnterGetEvent)
	if mode == "sqpoll" {
		toSubmit, flags = 0, ioringEnterGetEvent|ioringEnterSQWakeup
	}
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(ring), toSubmit, 1, flags, 0, 0); errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring_enter: %w", errno)
	}
	cqTail := (*uint32)(unsafe.Pointer(&cq[p.CQOff.Tail]))
	for deadline := time.Now().Add(3 * time.Second); atomic.LoadUint32(cqTail) == 0; {
		if time.Now().After(deadline) {
			unix.Close(fd)
			return nil, errors.New("io_uring connect: no completion within 3s")
		}
		time.Sleep(time.Millisecond)
	}
	cqe := (*ioUringCQE)(unsafe.Pointer(&cq[p.CQOff.CQEs]))
	if cqe.Res < 0 {
		unix.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp4", Err: os.NewSyscallError("io_uring connect", syscall.Errno(-cqe.Res))}
	}
	f := os.NewFile(uintptr(fd), "io_uring")
	defer f.Close()
	return net.FileConn(f)
}
