package capture

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// MintToken returns the edged login token for user valid until expiry:
// v1.<expiry-unix>.<base64url(HMAC-SHA256(secret, "<user>|<expiry>"))>
// (PROTOCOL.md, "Identity and login"; unpadded base64url as edge.IssueToken).
func MintToken(secret []byte, user string, expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(user))
	m.Write([]byte{'|'})
	m.Write([]byte(exp))
	return "v1." + exp + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// maxIDLen is the longest user id (PROTOCOL.md).
const maxIDLen = 64

// identities maps recorded user ids to replay ids. The n-th recorded
// identity of copy k becomes "r<k>.<n>." in base 36, padded with '_' to the
// recorded id's length when that is longer, so topics and CONNECTs keep their
// sizes. The core ends in '.', so no core is a prefix of another and padding
// cannot make two ids equal; every result is a valid user id
// ([0-9A-Za-z_.-], at most 64 characters).
type identities struct {
	index map[string]int // recorded id -> n
}

func newIdentities() *identities { return &identities{index: map[string]int{}} }

// add registers a recorded id (idempotent) and returns its number.
func (m *identities) add(id string) int {
	n, ok := m.index[id]
	if !ok {
		n = len(m.index)
		m.index[id] = n
	}
	return n
}

// known reports whether id was registered.
func (m *identities) known(id string) bool {
	_, ok := m.index[id]
	return ok
}

// mapped returns the replay id of recorded id in copy k; id must be known.
func (m *identities) mapped(id string, k int) string {
	return replayID(k, m.index[id], len(id))
}

func replayID(k, n, length int) string {
	core := "r" + strconv.FormatInt(int64(k), 36) + "." + strconv.FormatInt(int64(n), 36) + "."
	if length > maxIDLen {
		length = maxIDLen
	}
	if len(core) >= length {
		return core
	}
	return core + strings.Repeat("_", length-len(core))
}

// profileUserLevel reports whether the second level of a topic beginning
// with first names a user: u/<user>/..., r/<user>/..., p/<user>.
func profileUserLevel(first string) bool { return first == "u" || first == "r" || first == "p" }

// scanTopic registers the user ids a topic or filter names: the second
// level of a u/, r/ or p/ topic.
func (m *identities) scanTopic(topic string) {
	levels := strings.Split(topic, "/")
	if len(levels) >= 2 && profileUserLevel(levels[0]) && validID(levels[1]) {
		m.add(levels[1])
	}
}

// topic rewrites a topic or filter for copy k: every level that is a known
// recorded id becomes its replay id; wildcards and other levels are kept.
// With isolate (Scale > 1), a generic topic (not u/, r/, p/, g/ or $) also
// gets the prefix "r<k>/", so that copies do not receive each other's
// traffic.
func (m *identities) topic(topic string, k int, isolate bool) string {
	levels := strings.Split(topic, "/")
	changed := false
	for i, l := range levels {
		if m.known(l) {
			levels[i] = m.mapped(l, k)
			changed = true
		}
	}
	if changed {
		topic = strings.Join(levels, "/")
	}
	if isolate && !strings.HasPrefix(topic, "$") && !(len(levels) > 1 && (profileUserLevel(levels[0]) || levels[0] == "g")) {
		topic = "r" + strconv.FormatInt(int64(k), 36) + "/" + topic
	}
	return topic
}

// validID: 1-64 characters of [0-9A-Za-z_.-] (PROTOCOL.md).
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
