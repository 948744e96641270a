package sysctl

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// Errors returned by this package. Each is wrapped with the key and detail,
// so test them with errors.Is.
var (
	// ErrUnknownKey: the key's file does not exist under the root, or the
	// key's name is malformed (empty, absolute, or containing "..").
	ErrUnknownKey = errors.New("unknown key")
	// ErrReadOnly: the file has no write permission bits or lives on a
	// read-only file system.
	ErrReadOnly = errors.New("read-only key")
	// ErrPermission: the kernel refused to open the file for writing
	// (EACCES/EPERM), typically when not root.
	ErrPermission = errors.New("permission denied")
	// ErrBadValue: the value does not parse as the key's type.
	ErrBadValue = errors.New("malformed value")
	// ErrOutOfRange: the value parses but lies outside the key's bounds or
	// breaks its ordering rule (tcp_mem's min <= pressure <= max).
	ErrOutOfRange = errors.New("value out of range")
	// ErrChanged: the key's value moved between planning and applying.
	ErrChanged = errors.New("value changed since plan")
	// ErrMismatch: Verify read back a value other than the one wanted.
	ErrMismatch = errors.New("value differs from wanted")
	// ErrState: the state (backup) file is missing or unreadable.
	ErrState = errors.New("bad state file")
)

// Type says how a key's text is parsed, normalised and compared.
type Type int

const (
	// Ints is one or more whitespace-separated decimal integers (somaxconn,
	// tcp_mem, ip_local_port_range).
	Ints Type = iota
	// CPUMask is a hexadecimal CPU bitmap, optionally in comma-separated
	// 32-bit groups as the kernel prints it (rps_cpus, xps_cpus).
	CPUMask
	// CPUList is a CPU list such as "0-3,8" (smp_affinity_list).
	CPUList
	// Choice is a selection among words; the kernel prints all of them with
	// the selected one in brackets ("always [madvise] never") and accepts
	// the bare word on write.
	Choice
	// Text is a whole file kept byte for byte (a systemd drop-in).
	Text
)

var typeNames = [...]string{Ints: "ints", CPUMask: "cpumask", CPUList: "cpulist", Choice: "choice", Text: "text"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// Spec describes what a key accepts. The zero Spec is one integer field of
// any value.
type Spec struct {
	Type Type
	// Fields is the number of integer fields (Ints); 0 means one.
	Fields int
	// Min and Max bound every integer field (Ints) or every CPU number
	// (CPUList); both zero means unbounded.
	Min, Max int64
	// Ordered requires integer fields to be non-decreasing.
	Ordered bool
	// Choices lists the accepted words (Choice).
	Choices []string
	// Create lets the file be absent: Apply creates it and Rollback removes
	// it again (Text only).
	Create bool
	// Source cites where the bounds come from (kernel file or document).
	Source string
}

// Value is a normalised value: integer fields joined by one space, a CPU mask
// as lower-case hex without leading zeros or commas, a CPU list in canonical
// ranges, a Choice's selected word, or a Text file's bytes. Absent (the file
// does not exist) is the empty Value for Text keys with Create set.
type Value string

// maxMaskCPUs bounds the CPU numbers a mask or list may name, so a typo such
// as "0-99999999" is rejected instead of building a huge bitmap. The kernel's
// NR_CPUS tops out at 8192 (arch/x86/Kconfig, MAXSMP).
const maxMaskCPUs = 8192

// Parse validates s against the spec and returns its normalised form.
// It returns ErrBadValue or ErrOutOfRange, wrapped.
func (s Spec) Parse(text string) (Value, error) {
	switch s.Type {
	case Ints:
		f := strings.Fields(text)
		want := max(s.Fields, 1)
		if len(f) != want {
			return "", fmt.Errorf("parse %q: %w: want %d integer field(s), got %d", text, ErrBadValue, want, len(f))
		}
		vals := make([]int64, len(f))
		for i, x := range f {
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return "", fmt.Errorf("parse %q: %w: field %d is not an integer", text, ErrBadValue, i+1)
			}
			if (s.Min != 0 || s.Max != 0) && (v < s.Min || v > s.Max) {
				return "", fmt.Errorf("parse %q: %w: field %d = %d, allowed %d..%d", text, ErrOutOfRange, i+1, v, s.Min, s.Max)
			}
			if s.Ordered && i > 0 && v < vals[i-1] {
				return "", fmt.Errorf("parse %q: %w: field %d (%d) is below field %d (%d); fields must not decrease", text, ErrOutOfRange, i+1, v, i, vals[i-1])
			}
			vals[i] = v
		}
		return Value(strings.Join(f, " ")), nil
	case CPUMask:
		hex := strings.ReplaceAll(strings.TrimSpace(text), ",", "")
		if hex == "" {
			return "", fmt.Errorf("parse %q: %w: empty cpu mask", text, ErrBadValue)
		}
		n, ok := new(big.Int).SetString(hex, 16)
		if !ok {
			return "", fmt.Errorf("parse %q: %w: not a hexadecimal cpu mask", text, ErrBadValue)
		}
		if n.BitLen() > maxMaskCPUs {
			return "", fmt.Errorf("parse %q: %w: names cpus beyond %d", text, ErrOutOfRange, maxMaskCPUs)
		}
		return Value(n.Text(16)), nil
	case CPUList:
		cpus, err := parseCPUList(text)
		if err != nil {
			return "", fmt.Errorf("parse %q: %w", text, err)
		}
		if len(cpus) == 0 {
			return "", fmt.Errorf("parse %q: %w: empty cpu list", text, ErrBadValue)
		}
		if s.Max != 0 && cpus[len(cpus)-1] > int(s.Max) {
			return "", fmt.Errorf("parse %q: %w: cpu %d above %d", text, ErrOutOfRange, cpus[len(cpus)-1], s.Max)
		}
		return Value(FormatCPUList(cpus)), nil
	case Choice:
		w := strings.TrimSpace(text)
		if i := strings.IndexByte(w, '['); i >= 0 {
			if j := strings.IndexByte(w[i:], ']'); j > 0 {
				w = w[i+1 : i+j]
			}
		}
		if !slices.Contains(s.Choices, w) {
			return "", fmt.Errorf("parse %q: %w: want one of %s", text, ErrBadValue, strings.Join(s.Choices, ", "))
		}
		return Value(w), nil
	case Text:
		if !s.Create {
			// A one-line kernel text value such as tcp_congestion_control.
			return Value(strings.TrimSpace(text)), nil
		}
		return Value(text), nil
	}
	return "", fmt.Errorf("parse %q: %w: unknown type %v", text, ErrBadValue, s.Type)
}

// Ints returns the integer fields of an Ints value.
func (v Value) Ints() ([]int64, error) {
	f := strings.Fields(string(v))
	out := make([]int64, len(f))
	for i, x := range f {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse %q: %w", string(v), ErrBadValue)
		}
		out[i] = n
	}
	return out, nil
}

// shape returns s without bounds or ordering: the rule for reading a
// current value, which must parse but may lie outside what we would write
// (so that a plan can fix it).
func (s Spec) shape() Spec {
	s.Min, s.Max, s.Ordered = 0, 0, false
	return s
}

// writeText is the text written to the file for v.
func (s Spec) writeText(v Value) string {
	switch s.Type {
	case Ints:
		return strings.ReplaceAll(string(v), " ", "\t") + "\n"
	case CPUMask:
		return FormatCPUMask(string(v)) + "\n"
	case Text:
		if s.Create {
			return string(v)
		}
	}
	return string(v) + "\n"
}

// FormatCPUMask renders a hex mask in the kernel's comma-separated 32-bit
// groups ("ff,ffffffff"), which bitmap_parse accepts on every kernel
// (lib/bitmap-str.c).
func FormatCPUMask(hex string) string {
	hex = strings.TrimLeft(hex, "0")
	if hex == "" {
		return "0"
	}
	var groups []string
	for len(hex) > 8 {
		groups = append([]string{hex[len(hex)-8:]}, groups...)
		hex = hex[:len(hex)-8]
	}
	return strings.Join(append([]string{hex}, groups...), ",")
}

// MaskOf returns the normalised hex mask with the given CPUs set.
func MaskOf(cpus []int) string {
	n := new(big.Int)
	for _, c := range cpus {
		n.SetBit(n, c, 1)
	}
	return n.Text(16)
}

func parseCPUList(text string) ([]int, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	var cpus []int
	for _, part := range strings.Split(text, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%w: %q is not a cpu number", ErrBadValue, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("%w: bad cpu range %q", ErrBadValue, part)
			}
		}
		if b >= maxMaskCPUs {
			return nil, fmt.Errorf("%w: cpu %d beyond %d", ErrOutOfRange, b, maxMaskCPUs)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

// ParseCPUList parses a list such as "0-3,8" into sorted CPU numbers.
func ParseCPUList(text string) ([]int, error) { return parseCPUList(text) }

// FormatCPUList renders sorted CPU numbers as ranges ("0-3,8").
func FormatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}
