package messages

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxMsgpackDepth is the deepest nesting of arrays and maps a msgpack body
// may have. The deepest message, a ListReply (its limits, a limit, its
// holders, a holder, its names), nests six deep.
const maxMsgpackDepth = 32

// Reasons checkMsgpack refuses a body; unmarshalMsgpack wraps them in
// "decode msgpack: ...".
var (
	errMsgpackTruncated = errors.New("truncated body")
	errMsgpackLength    = errors.New("declared length exceeds the body")
	errMsgpackDepth     = errors.New("nested too deeply")
	errMsgpackCode      = errors.New("invalid code")
)

// checkMsgpack walks the first msgpack value of data without allocating and
// refuses it before the decoder sees it when it declares more than data can
// hold: a str, bin or ext longer than the bytes left, an array with more
// elements than bytes left (each element takes at least one byte) or a map
// with more entries than half of them (an entry takes two), nesting deeper
// than maxMsgpackDepth, a reserved code, or a value cut short. msgpack
// v5.4.1 allocates for the lengths a body declares before it reads what
// they cover (1 MiB for a bin32 of 4 GiB, 16 MB for an array32 of 4 Gi
// strings): once every length is bounded by the body, decoding allocates
// at most a small multiple of the body's size (a []string element takes 16
// bytes and may be declared by one; a slice of structs is allocated at its
// declared length at once, so a reply's list of LimitInfo costs 176 bytes
// for each element, which one byte may declare). Bytes after the first
// value are not looked at, as the decoder does not read them.
func checkMsgpack(data []byte) error {
	_, err := msgpackValueEnd(data, 0, 1)
	return err
}

// msgpackValueEnd checks the msgpack value that starts at data[i], at
// nesting depth depth (1 for the body's value), and returns the offset just
// past it.
func msgpackValueEnd(data []byte, i, depth int) (int, error) {
	if i >= len(data) {
		return 0, errMsgpackTruncated
	}
	c := data[i]
	i++
	switch {
	case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		return i, nil
	case c <= 0x8f: // fixmap
		return msgpackContainerEnd(data, i, depth, uint64(c&0x0f), 2)
	case c <= 0x9f: // fixarray
		return msgpackContainerEnd(data, i, depth, uint64(c&0x0f), 1)
	case c <= 0xbf: // fixstr
		return msgpackSkip(data, i, uint64(c&0x1f), "str")
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return i, nil
	case 0xc4, 0xc5, 0xc6: // bin 8, 16, 32
		n, i, err := msgpackUint(data, i, 1<<(c-0xc4))
		if err != nil {
			return 0, err
		}
		return msgpackSkip(data, i, n, "bin")
	case 0xc7, 0xc8, 0xc9: // ext 8, 16, 32: length, type, data
		n, i, err := msgpackUint(data, i, 1<<(c-0xc7))
		if err != nil {
			return 0, err
		}
		return msgpackSkip(data, i, n+1, "ext")
	case 0xca, 0xcb: // float 32, 64
		return msgpackSkip(data, i, 4<<(c-0xca), "float")
	case 0xcc, 0xcd, 0xce, 0xcf: // uint 8 to 64
		return msgpackSkip(data, i, 1<<(c-0xcc), "uint")
	case 0xd0, 0xd1, 0xd2, 0xd3: // int 8 to 64
		return msgpackSkip(data, i, 1<<(c-0xd0), "int")
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1 to 16: type, data
		return msgpackSkip(data, i, 1+1<<(c-0xd4), "ext")
	case 0xd9, 0xda, 0xdb: // str 8, 16, 32
		n, i, err := msgpackUint(data, i, 1<<(c-0xd9))
		if err != nil {
			return 0, err
		}
		return msgpackSkip(data, i, n, "str")
	case 0xdc, 0xdd: // array 16, 32
		n, i, err := msgpackUint(data, i, 2<<(c-0xdc))
		if err != nil {
			return 0, err
		}
		return msgpackContainerEnd(data, i, depth, n, 1)
	case 0xde, 0xdf: // map 16, 32
		n, i, err := msgpackUint(data, i, 2<<(c-0xde))
		if err != nil {
			return 0, err
		}
		return msgpackContainerEnd(data, i, depth, n, 2)
	}
	return 0, fmt.Errorf("%w %#x at byte %d", errMsgpackCode, c, i-1) // 0xc1, never used
}

// msgpackContainerEnd checks the n elements of an array (per 1) or the n
// entries of a map (per 2, a key and a value) that start at data[i], the
// container being at nesting depth depth.
func msgpackContainerEnd(data []byte, i, depth int, n uint64, per int) (int, error) {
	if depth > maxMsgpackDepth {
		return 0, fmt.Errorf("%w: over %d levels of arrays and maps", errMsgpackDepth, maxMsgpackDepth)
	}
	left := uint64(len(data) - i)
	if n > left/uint64(per) {
		what := "array of %d elements"
		if per == 2 {
			what = "map of %d entries"
		}
		return 0, fmt.Errorf("%w: "+what+" with %d bytes left", errMsgpackLength, n, left)
	}
	for range int(n) * per {
		var err error
		if i, err = msgpackValueEnd(data, i, depth+1); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// msgpackUint reads the size-byte big-endian length at data[i].
func msgpackUint(data []byte, i, size int) (uint64, int, error) {
	if len(data)-i < size {
		return 0, 0, errMsgpackTruncated
	}
	b := data[i : i+size]
	switch size {
	case 1:
		return uint64(b[0]), i + 1, nil
	case 2:
		return uint64(binary.BigEndian.Uint16(b)), i + 2, nil
	default:
		return uint64(binary.BigEndian.Uint32(b)), i + 4, nil
	}
}

// msgpackSkip passes over n bytes of a what at data[i].
func msgpackSkip(data []byte, i int, n uint64, what string) (int, error) {
	if left := uint64(len(data) - i); n > left {
		if what == "str" || what == "bin" || what == "ext" {
			return 0, fmt.Errorf("%w: %s of %d bytes with %d bytes left", errMsgpackLength, what, n, left)
		}
		return 0, errMsgpackTruncated
	}
	return i + int(n), nil
}
