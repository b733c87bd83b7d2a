package postgres

import (
	"bufio"
	"io"
	"sync"
)

// bufPool recycles the sessions' buffered readers and writers: 192 KiB a
// session (32 KiB each way to the agent, 64 KiB each way to the server).
// Allocated for every connection, they were most of what the engine
// allocates when clients connect per transaction, and so most of its
// garbage-collection work. A session returns them once both of its loops
// have ended; nothing reads or writes them after that.
type bufPool struct {
	r32, w32, r64, w64 sync.Pool
}

// Buffer sizes: the agent's side, and the server's side (large results).
const (
	clientBufSize   = 32 << 10
	upstreamBufSize = 64 << 10
)

func (p *bufPool) readers(size int) *sync.Pool {
	if size == upstreamBufSize {
		return &p.r64
	}
	return &p.r32
}

func (p *bufPool) writers(size int) *sync.Pool {
	if size == upstreamBufSize {
		return &p.w64
	}
	return &p.w32
}

// reader returns a reader of size bytes on r; p may be nil (tests).
func (p *bufPool) reader(r io.Reader, size int) *bufio.Reader {
	if p != nil {
		if br, _ := p.readers(size).Get().(*bufio.Reader); br != nil {
			br.Reset(r)
			return br
		}
	}
	return bufio.NewReaderSize(r, size)
}

// writer returns a writer of size bytes on w; p may be nil (tests).
func (p *bufPool) writer(w io.Writer, size int) *bufio.Writer {
	if p != nil {
		if bw, _ := p.writers(size).Get().(*bufio.Writer); bw != nil {
			bw.Reset(w)
			return bw
		}
	}
	return bufio.NewWriterSize(w, size)
}

// putReader takes br back; br must not be used afterwards. Buffers of
// other sizes (none today) are left to the garbage collector.
func (p *bufPool) putReader(br *bufio.Reader) {
	if p == nil || br == nil || (br.Size() != clientBufSize && br.Size() != upstreamBufSize) {
		return
	}
	br.Reset(nil)
	p.readers(br.Size()).Put(br)
}

// putWriter takes bw back, discarding anything unflushed.
func (p *bufPool) putWriter(bw *bufio.Writer) {
	if p == nil || bw == nil || (bw.Size() != clientBufSize && bw.Size() != upstreamBufSize) {
		return
	}
	bw.Reset(nil)
	p.writers(bw.Size()).Put(bw)
}
