package edge

import (
	"fmt"
	"slices"
	"sync"
)

// Groups is the group membership table (server state, managed through the
// admin API). It is safe for concurrent use.
type Groups struct {
	mu sync.RWMutex // guards m
	m  map[string]map[string]struct{}
	// onChange, if set, logs a change under mu (the durable store) and
	// returns its seq; sync then makes it durable before Add or Remove
	// returns.
	onChange func(add bool, group, user string) uint64
	sync     func() error
	// cluster, if set, records a change cluster-wide (Config.Cluster);
	// the other nodes apply it with set(..., false).
	cluster func(add bool, group, user string) error
}

func newGroups() *Groups { return &Groups{m: make(map[string]map[string]struct{})} }

// Add makes user a member of group. It returns ErrBadGroup or ErrBadUserID
// for invalid names, ErrStoreUnavailable if the change is made but not yet
// durable (the store retries) or, in a cluster, not recorded cluster-wide,
// and reports whether the user was added (false if already a member).
func (g *Groups) Add(group, user string) (bool, error) { return g.set(true, group, user, true) }

// Remove removes user from group and reports whether it was a member. An
// empty group is deleted. Errors as for Add.
func (g *Groups) Remove(group, user string) (bool, error) { return g.set(false, group, user, true) }

// set adds (add) or removes user, reporting whether that changed anything,
// and, if share, records the change cluster-wide.
func (g *Groups) set(add bool, group, user string, share bool) (bool, error) {
	if err := checkGroupUser(group, user); err != nil {
		return false, err
	}
	g.mu.Lock()
	mem := g.m[group]
	if mem == nil && add {
		mem = make(map[string]struct{})
		g.m[group] = mem
	}
	_, had := mem[user]
	if add {
		mem[user] = struct{}{}
	} else {
		delete(mem, user)
		if had && len(mem) == 0 {
			delete(g.m, group)
		}
	}
	g.logLocked(add, group, user)
	g.mu.Unlock()
	err := g.commit()
	if share && g.cluster != nil && err == nil {
		if err = g.cluster(add, group, user); err != nil {
			err = fmt.Errorf("share group change: %w: %w", ErrStoreUnavailable, err)
		}
	}
	return had != add, err
}

// logLocked logs a change (g.mu held), even one that changes nothing: a
// retry after ErrStoreUnavailable must not answer success with nothing
// on disk.
func (g *Groups) logLocked(add bool, group, user string) {
	if g.onChange != nil {
		g.onChange(add, group, user)
	}
}

// commit makes the logged changes durable, after g.mu is released (an
// fsync must not hold up the loops' membership checks). The change is
// made in memory either way; the store writes it when it recovers.
func (g *Groups) commit() error {
	if g.sync == nil {
		return nil
	}
	if err := g.sync(); err != nil {
		return fmt.Errorf("store group change: %w: %w", ErrStoreUnavailable, err)
	}
	return nil
}

// Members returns the sorted members of group (nil if it has none).
func (g *Groups) Members(group string) []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	mem := g.m[group]
	if len(mem) == 0 {
		return nil
	}
	out := make([]string, 0, len(mem))
	for u := range mem {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// List returns the sorted group names.
func (g *Groups) List() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]string, 0, len(g.m))
	for name := range g.m {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// isMember reports whether user is in group.
func (g *Groups) isMember(group, user []byte) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, ok := g.m[string(group)][string(user)]
	return ok
}

// forEachOther appends the members of group except from to dst.
func (g *Groups) others(group, from []byte, dst []string) []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for u := range g.m[string(group)] {
		if u != string(from) {
			dst = append(dst, u)
		}
	}
	return dst
}

func checkGroupUser(group, user string) error {
	if !ValidID(group) {
		return fmt.Errorf("check group %q: %w", group, ErrBadGroup)
	}
	if !ValidID(user) {
		return fmt.Errorf("check user %q: %w", user, ErrBadUserID)
	}
	return nil
}
