package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// pcapng block types whose lengths ngGuard checks.
const (
	ngSectionHeader  = 0x0a0d0d0a
	ngPacket         = 2 // obsolete Packet Block
	ngSimplePacket   = 3
	ngEnhancedPacket = 6
	ngByteOrderMagic = 0x1a2b3c4d
	maxNgBlock       = maxSnaplen + 1<<16 // a packet plus generous options
)

// ngGuard passes a pcapng stream through unchanged, checking each block's
// length fields before the parser sees them: gopacket's NgReader allocates
// a packet's captured length as the file states it (up to 4 GiB) without
// comparing it with the block length.
type ngGuard struct {
	r     *bufio.Reader
	order binary.ByteOrder
	left  int64 // bytes of the current block not yet passed on
	off   int64 // file offset of the next byte passed on
}

func newNgGuard(r *bufio.Reader) *ngGuard { return &ngGuard{r: r, order: binary.LittleEndian} }

func (g *ngGuard) Read(p []byte) (int, error) {
	if g.left == 0 {
		if err := g.next(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= int64(n)
	g.off += int64(n)
	return n, err
}

// next checks the header of the block at the current offset.
func (g *ngGuard) next() error {
	hdr, err := g.r.Peek(12)
	if len(hdr) < 8 {
		if len(hdr) == 0 && errors.Is(err, io.EOF) {
			return io.EOF
		}
		g.left = int64(len(hdr)) // a partial header: the parser reports it
		if g.left == 0 {
			return err
		}
		return nil
	}
	if binary.LittleEndian.Uint32(hdr) == ngSectionHeader && len(hdr) == 12 {
		switch {
		case binary.LittleEndian.Uint32(hdr[8:]) == ngByteOrderMagic:
			g.order = binary.LittleEndian
		case binary.BigEndian.Uint32(hdr[8:]) == ngByteOrderMagic:
			g.order = binary.BigEndian
		default:
			return fmt.Errorf("pcapng section at offset %d: bad byte-order magic", g.off)
		}
	}
	typ, total := g.order.Uint32(hdr), g.order.Uint32(hdr[4:])
	if total < 12 || total%4 != 0 || total > maxNgBlock {
		return fmt.Errorf("pcapng block at offset %d: length %d (want a multiple of 4 in [12, %d])", g.off, total, maxNgBlock)
	}
	switch typ {
	case ngEnhancedPacket, ngPacket:
		if b, _ := g.r.Peek(28); len(b) == 28 {
			if caplen := g.order.Uint32(b[20:]); caplen > total-32 {
				return fmt.Errorf("pcapng packet block at offset %d: captured length %d exceeds the block's %d bytes", g.off, caplen, total)
			}
		}
	case ngSimplePacket:
		if b, _ := g.r.Peek(12); len(b) == 12 {
			if orig := g.order.Uint32(b[8:]); orig > total-16 {
				return fmt.Errorf("pcapng simple packet block at offset %d: length %d exceeds the block's %d bytes", g.off, orig, total)
			}
		}
	}
	g.left = int64(total)
	return nil
}
