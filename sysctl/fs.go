package sysctl

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultRoot is where the kernel exposes sysctls.
const DefaultRoot = "/proc/sys"

// maxValueBytes bounds one read: sysctl and sysfs values fit in a page, and a
// drop-in file is a few lines. A larger file is not something we manage.
const maxValueBytes = 64 << 10

// FS is a tree of one-value-per-file keys under Root. A key is either dotted
// ("net.core.somaxconn", mapped to net/core/somaxconn as sysctl(8) does) or,
// when it contains a slash, a path relative to Root (needed when a component
// holds a dot, as in "net/ipv4/conf/eth0.100/rp_filter" or a sysfs path).
// An FS holds no open files and is safe for concurrent use.
type FS struct {
	Root string
}

// New returns an FS rooted at root, or at DefaultRoot when root is empty.
func New(root string) *FS {
	if root == "" {
		root = DefaultRoot
	}
	return &FS{Root: root}
}

// Path maps key to its file. It returns ErrUnknownKey for a malformed name.
func (f *FS) Path(key string) (string, error) {
	rel := key
	if !strings.Contains(key, "/") {
		rel = strings.ReplaceAll(key, ".", "/")
	}
	if key == "" || strings.HasPrefix(rel, "/") || !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", fmt.Errorf("resolve key %q: %w: malformed name", key, ErrUnknownKey)
	}
	return filepath.Join(f.Root, filepath.FromSlash(rel)), nil
}

// Spec returns the spec for key: the known one, else one inferred from the
// current value. It returns ErrUnknownKey if the key has no file.
func (f *FS) Spec(key string) (Spec, error) {
	if s, ok := Lookup(key); ok {
		return s, nil
	}
	raw, _, err := f.readRaw(key)
	if err != nil {
		return Spec{}, err
	}
	return infer(raw), nil
}

// Read returns the key's normalised value. It returns ErrUnknownKey when the
// file does not exist and ErrBadValue when its content does not parse as the
// key's type. A Create key whose file is absent reads as the empty Value.
func (f *FS) Read(key string) (Value, error) {
	raw, exists, err := f.readRaw(key)
	if err != nil {
		return "", err
	}
	s, ok := Lookup(key)
	if !ok {
		s = infer(raw)
	}
	if !exists {
		return "", nil
	}
	v, err := s.shape().Parse(raw)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return v, nil
}

// readRaw reads the file; exists is false only for an absent Create key.
func (f *FS) readRaw(key string) (raw string, exists bool, err error) {
	p, err := f.Path(key)
	if err != nil {
		return "", false, err
	}
	fh, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if s, ok := Lookup(key); ok && s.Create {
				return "", false, nil
			}
			return "", false, fmt.Errorf("read %s: %w: no file %s", key, ErrUnknownKey, p)
		}
		if errors.Is(err, fs.ErrPermission) {
			return "", false, fmt.Errorf("read %s: %w: %w", key, ErrPermission, err)
		}
		return "", false, fmt.Errorf("read %s: %w", key, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxValueBytes+1))
	if err != nil {
		if errors.Is(err, syscall.EISDIR) {
			return "", false, fmt.Errorf("read %s: %w: %s is a directory", key, ErrUnknownKey, p)
		}
		return "", false, fmt.Errorf("read %s: %w", key, err)
	}
	if len(b) > maxValueBytes {
		return "", false, fmt.Errorf("read %s: %w: more than %d bytes", key, ErrBadValue, maxValueBytes)
	}
	return string(b), true, nil
}

// Write validates v against the key's spec and writes it, without a backup.
// Prefer Change plus Apply, which can roll back.
func (f *FS) Write(key, v string) error {
	c, err := f.Change(key, v)
	if err != nil {
		return err
	}
	if !c.NeedsWrite() {
		return nil
	}
	return c.write(c.To)
}

// Change is one planned write: the value seen when it was built (From) and
// the wanted one (To), both normalised.
type Change struct {
	Key     string
	Path    string
	Spec    Spec
	From    Value
	Existed bool // false: a Create file that does not exist yet
	To      Value
}

// NeedsWrite reports whether To differs from From.
func (c Change) NeedsWrite() bool { return c.From != c.To || !c.Existed && c.Spec.Create }

// Change reads key's current value and validates the wanted one with the
// key's spec (see Lookup; unknown keys take the shape of their current
// value). When a write is needed it also checks that the file is writable,
// so that every refusal comes before anything changes. It returns
// ErrUnknownKey, ErrBadValue, ErrOutOfRange, ErrReadOnly or ErrPermission,
// wrapped with the key.
func (f *FS) Change(key, to string) (Change, error) {
	p, err := f.Path(key)
	if err != nil {
		return Change{}, err
	}
	raw, exists, err := f.readRaw(key)
	if err != nil {
		return Change{}, err
	}
	s, ok := Lookup(key)
	if !ok {
		s = infer(raw)
	}
	want, err := s.Parse(to)
	if err != nil {
		return Change{}, fmt.Errorf("set %s: %w", key, err)
	}
	c := Change{Key: key, Path: p, Spec: s, Existed: exists, To: want}
	if exists {
		if c.From, err = s.shape().Parse(raw); err != nil {
			return Change{}, fmt.Errorf("read %s: %w", key, err)
		}
	}
	if c.NeedsWrite() {
		if err := c.checkWritable(); err != nil {
			return Change{}, err
		}
	}
	return c, nil
}

// checkWritable opens the file for writing without truncating or writing,
// which is where procfs and sysfs check permission (proc_sys_permission),
// and looks at the mode bits because root may open a 0444 file in a
// temporary tree that the kernel would refuse in /proc/sys.
func (c Change) checkWritable() error {
	if !c.Existed {
		dir := filepath.Dir(c.Path)
		for {
			st, err := os.Stat(dir)
			if err == nil {
				if !st.IsDir() {
					return fmt.Errorf("check %s: %w: %s is not a directory", c.Key, ErrUnknownKey, dir)
				}
				return classifyOpenErr(c.Key, syscallAccess(dir))
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return fmt.Errorf("check %s: %w", c.Key, err)
			}
			dir = parent
		}
	}
	st, err := os.Stat(c.Path)
	if err != nil {
		return fmt.Errorf("check %s: %w", c.Key, err)
	}
	if st.IsDir() {
		return fmt.Errorf("check %s: %w: %s is a directory", c.Key, ErrUnknownKey, c.Path)
	}
	if st.Mode().Perm()&0o222 == 0 {
		return fmt.Errorf("check %s: %w: mode %v", c.Key, ErrReadOnly, st.Mode().Perm())
	}
	fh, err := os.OpenFile(c.Path, os.O_WRONLY, 0)
	if err != nil {
		return classifyOpenErr(c.Key, err)
	}
	return fh.Close()
}

func classifyOpenErr(key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("check %s: %w: read-only file system", key, ErrReadOnly)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("check %s: %w: %w", key, ErrPermission, err)
	}
	return fmt.Errorf("check %s: %w", key, err)
}

// write puts v into the file. A Create file is replaced atomically (temporary
// file plus rename); a kernel file is written in place with one write call,
// as the kernel parses each write on its own.
func (c Change) write(v Value) error {
	text := c.Spec.writeText(v)
	if c.Spec.Create {
		if err := os.MkdirAll(filepath.Dir(c.Path), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", c.Key, err)
		}
		tmp := c.Path + ".edgectl-tmp"
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", c.Key, err)
		}
		if err := os.Rename(tmp, c.Path); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("write %s: %w", c.Key, err)
		}
		return nil
	}
	fh, err := os.OpenFile(c.Path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", c.Key, classifyOpenErr(c.Key, err))
	}
	_, err = fh.Write([]byte(text))
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s = %q: %w", c.Key, strings.TrimSpace(text), err)
	}
	return nil
}

// remove deletes a Create file (rollback of a file that did not exist).
func (c Change) remove() error {
	if err := os.Remove(c.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", c.Key, err)
	}
	return nil
}
