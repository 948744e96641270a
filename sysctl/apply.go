package sysctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// syscallAccess asks the kernel whether dir is writable by this process.
func syscallAccess(dir string) error {
	const wOK = 0x2 // W_OK, access(2)
	if err := syscall.Access(dir, wOK); err != nil {
		return &fs.PathError{Op: "access", Path: dir, Err: err}
	}
	return nil
}

// stateVersion is the format of the state file; bump it on an incompatible
// change so an old edgectl refuses a new file instead of misreading it.
const stateVersion = 1

// State is the backup written before Apply changes anything: for every key
// that Apply changed, the value it had before the first Apply that touched
// it. It is JSON so that an operator can read it (and restore by hand).
type State struct {
	Version int          `json:"version"`
	Created time.Time    `json:"created"`
	Entries []StateEntry `json:"entries"`
}

// StateEntry is one key's old value.
type StateEntry struct {
	Key     string `json:"key"`
	Path    string `json:"path"`
	Type    string `json:"type"`
	Create  bool   `json:"create,omitempty"`
	Existed bool   `json:"existed"`
	Value   Value  `json:"value"`
	Applied Value  `json:"applied"`
}

func (e StateEntry) change() (Change, error) {
	t := slices.Index(typeNames[:], e.Type)
	if t < 0 {
		return Change{}, fmt.Errorf("restore %s: %w: unknown type %q", e.Key, ErrState, e.Type)
	}
	s, ok := Lookup(e.Key)
	if !ok || s.Type != Type(t) {
		s = Spec{Type: Type(t), Create: e.Create, Fields: len(strings.Fields(string(e.Value)))}
	}
	return Change{Key: e.Key, Path: e.Path, Spec: s, Existed: e.Existed, From: e.Value, To: e.Applied}, nil
}

// Check re-validates every change that needs a write and returns all
// problems at once (errors.Join), or nil. Apply calls it first.
func Check(changes []Change) error {
	var errs []error
	seen := map[string]bool{}
	for _, c := range changes {
		if seen[c.Path] {
			errs = append(errs, fmt.Errorf("check %s: %w: key listed twice", c.Key, ErrBadValue))
		}
		seen[c.Path] = true
		if !c.NeedsWrite() {
			continue
		}
		if _, err := c.Spec.Parse(string(c.To)); err != nil {
			errs = append(errs, fmt.Errorf("check %s: %w", c.Key, err))
			continue
		}
		if err := c.checkCurrent(); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.checkWritable(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkCurrent re-reads the key and fails with ErrChanged if it moved since
// the change was built.
func (c Change) checkCurrent() error {
	raw, err := os.ReadFile(c.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && c.Spec.Create:
		if c.Existed {
			return fmt.Errorf("check %s: %w: file was removed", c.Key, ErrChanged)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("check %s: %w: no file %s", c.Key, ErrUnknownKey, c.Path)
	case err != nil:
		return fmt.Errorf("check %s: %w", c.Key, err)
	}
	if !c.Existed {
		return fmt.Errorf("check %s: %w: file appeared", c.Key, ErrChanged)
	}
	now, err := c.Spec.shape().Parse(string(raw))
	if err != nil {
		return fmt.Errorf("check %s: %w", c.Key, err)
	}
	if now != c.From {
		return fmt.Errorf("check %s: %w: planned from %q, now %q", c.Key, ErrChanged, c.From, now)
	}
	return nil
}

// Apply writes every change that needs it, in order, after Check passes and
// after recording the old values in the state file at statePath. If a state
// file already exists (an earlier Apply not rolled back), its entries are
// kept, so Rollback still returns to the values before the first Apply.
// If a write fails part-way, Apply restores the keys it already wrote, in
// reverse order, puts the state file back as it was, and returns the write
// error joined with any restore error. It returns the number of keys written.
func Apply(changes []Change, statePath string) (n int, err error) {
	if err := Check(changes); err != nil {
		return 0, err
	}
	var todo []Change
	for _, c := range changes {
		if c.NeedsWrite() {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	prevState, hadState, err := readStateFile(statePath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	st := prevState
	if !hadState {
		st = State{Version: stateVersion, Created: time.Now().UTC()}
	}
	for _, c := range todo {
		i := slices.IndexFunc(st.Entries, func(e StateEntry) bool { return e.Path == c.Path })
		if i >= 0 {
			st.Entries[i].Applied = c.To
			continue
		}
		st.Entries = append(st.Entries, StateEntry{
			Key: c.Key, Path: c.Path, Type: c.Spec.Type.String(), Create: c.Spec.Create,
			Existed: c.Existed, Value: c.From, Applied: c.To,
		})
	}
	if err := writeStateFile(statePath, st); err != nil {
		return 0, err
	}
	for i, c := range todo {
		if err := c.write(c.To); err != nil {
			errs := []error{fmt.Errorf("apply: %w", err)}
			for j := i - 1; j >= 0; j-- {
				if rerr := todo[j].undo(); rerr != nil {
					errs = append(errs, fmt.Errorf("roll back after failed apply: %w", rerr))
				}
			}
			if hadState {
				if serr := writeStateFile(statePath, prevState); serr != nil {
					errs = append(errs, serr)
				}
			} else if serr := os.Remove(statePath); serr != nil {
				errs = append(errs, fmt.Errorf("remove state file: %w", serr))
			}
			if len(errs) == 1 {
				errs = append(errs, fmt.Errorf("rolled back %d key(s) written before the failure", i))
			}
			return 0, errors.Join(errs...)
		}
	}
	return len(todo), nil
}

// undo puts one change's old value back.
func (c Change) undo() error {
	if c.Spec.Create && !c.Existed {
		return c.remove()
	}
	return c.write(c.From)
}

// Mismatch is a key whose value is not the wanted one.
type Mismatch struct {
	Key       string
	Want, Got Value
	Err       error // reading failed
}

// Verify reads every change's key back and returns those that do not hold
// To, with an error wrapping ErrMismatch if there are any.
func Verify(changes []Change) ([]Mismatch, error) {
	var bad []Mismatch
	for _, c := range changes {
		got, err := readChange(c)
		if err != nil || got != c.To {
			bad = append(bad, Mismatch{Key: c.Key, Want: c.To, Got: got, Err: err})
		}
	}
	if len(bad) > 0 {
		return bad, fmt.Errorf("verify: %w: %d of %d key(s), first %s (want %q, got %q)", ErrMismatch, len(bad), len(changes), bad[0].Key, bad[0].Want, bad[0].Got)
	}
	return nil, nil
}

func readChange(c Change) (Value, error) {
	raw, err := os.ReadFile(c.Path)
	if errors.Is(err, fs.ErrNotExist) && c.Spec.Create {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", c.Key, err)
	}
	return c.Spec.shape().Parse(string(raw))
}

// Rollback restores every entry of the state file at statePath, in reverse
// order of application, verifies the restored values, and removes the state
// file. On any failure the state file stays, so Rollback can be retried. It
// returns the number of keys restored, and ErrState for a missing or bad
// state file.
func Rollback(statePath string) (int, error) {
	st, ok, err := readStateFile(statePath)
	if !ok {
		return 0, err
	}
	var errs []error
	var restored []Change
	for i := len(st.Entries) - 1; i >= 0; i-- {
		c, err := st.Entries[i].change()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.undo(); err != nil {
			errs = append(errs, fmt.Errorf("roll back: %w", err))
			continue
		}
		restored = append(restored, Change{Key: c.Key, Path: c.Path, Spec: c.Spec, To: c.From})
	}
	if _, err := Verify(restored); err != nil {
		errs = append(errs, fmt.Errorf("roll back: %w", err))
	}
	if len(errs) > 0 {
		return len(restored), errors.Join(errs...)
	}
	if err := os.Remove(statePath); err != nil {
		return len(restored), fmt.Errorf("remove state file: %w", err)
	}
	return len(restored), nil
}

// ReadState returns the state file's content. ok is false when it is absent.
func ReadState(statePath string) (st State, ok bool, err error) {
	return readStateFile(statePath)
}

func readStateFile(p string) (State, bool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return State{}, false, fmt.Errorf("read state %s: %w: %w", p, ErrState, err)
		}
		return State{}, false, fmt.Errorf("read state %s: %w", p, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, false, fmt.Errorf("read state %s: %w: %w", p, ErrState, err)
	}
	if st.Version != stateVersion {
		return State{}, false, fmt.Errorf("read state %s: %w: version %d, want %d", p, ErrState, st.Version, stateVersion)
	}
	return st, true, nil
}

// writeStateFile replaces the state file atomically and syncs it, so a crash
// mid-apply leaves either no state file or a complete one.
func writeStateFile(p string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write state %s: %w", p, err)
	}
	tmp := p + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write state %s: %w", p, err)
	}
	_, err = fh.Write(append(b, '\n'))
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state %s: %w", p, err)
	}
	return nil
}
