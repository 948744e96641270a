package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// tokenVersion is the only token format: v1.<expiry>.<mac>.
const tokenVersion = "v1"

// IssueToken returns the login token for user valid until expiry:
// v1.<expiry-unix-seconds>.<base64url(HMAC-SHA256(secret, "<user>|<expiry>"))>
// (PROTOCOL.md, "Identity and login"). It returns ErrBadUserID for an invalid
// user id and ErrNoSecret for an empty secret.
func IssueToken(secret []byte, user string, expiry time.Time) (string, error) {
	if len(secret) == 0 {
		return "", ErrNoSecret
	}
	if !ValidID(user) {
		return "", fmt.Errorf("issue token for %q: %w", user, ErrBadUserID)
	}
	exp := strconv.FormatInt(expiry.Unix(), 10)
	return tokenVersion + "." + exp + "." + tokenMAC(secret, user, exp), nil
}

func tokenMAC(secret []byte, user, exp string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(user))
	m.Write([]byte{'|'})
	m.Write([]byte(exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// VerifyToken checks token for user at time now, statelessly: the MAC is
// compared in constant time and the expiry must be in the future. It returns
// nil, ErrBadToken (malformed or wrong MAC) or ErrTokenExpired.
func VerifyToken(secret []byte, user, token string, now time.Time) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	ver, rest, ok := strings.Cut(token, ".")
	if !ok || ver != tokenVersion {
		return ErrBadToken
	}
	exp, mac, ok := strings.Cut(rest, ".")
	if !ok || exp == "" || len(exp) > 19 {
		return ErrBadToken
	}
	expiry, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || expiry <= 0 || strconv.FormatInt(expiry, 10) != exp {
		return ErrBadToken
	}
	want := tokenMAC(secret, user, exp)
	if !hmac.Equal([]byte(want), []byte(mac)) {
		return ErrBadToken
	}
	if now.Unix() >= expiry {
		return ErrTokenExpired
	}
	return nil
}

// ValidID reports whether s is a valid user id, group name or message id:
// 1-64 characters of [0-9A-Za-z_.-] (PROTOCOL.md).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idChar(s[i]) {
			return false
		}
	}
	return true
}

func validIDBytes(s []byte) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !idChar(c) {
			return false
		}
	}
	return true
}

func idChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '.' || c == '-'
}
