package mqtt

// Text is a topic, filter or UTF-8 string held either as a string or as a
// byte slice (such as a field aliasing the read buffer); the helpers that
// take it never convert or allocate.
type Text interface{ ~string | ~[]byte }

// validUTF8 reports whether s is well-formed UTF-8 (no surrogates, no
// overlong forms, nothing above U+10FFFF) without U+0000, as 3.1.1 section
// 1.5.3 requires. Hand-written so that it works on strings and aliased byte
// slices alike without a conversion; FuzzValidUTF8 checks it against
// unicode/utf8.
func validUTF8[T Text](s T) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			if c == 0 {
				return false
			}
			i++
			continue
		}
		var n int
		var r, lo rune
		switch {
		case c&0xE0 == 0xC0:
			n, r, lo = 2, rune(c&0x1F), 0x80
		case c&0xF0 == 0xE0:
			n, r, lo = 3, rune(c&0x0F), 0x800
		case c&0xF8 == 0xF0:
			n, r, lo = 4, rune(c&0x07), 0x10000
		default:
			return false
		}
		if i+n > len(s) {
			return false
		}
		for j := 1; j < n; j++ {
			cc := s[i+j]
			if cc&0xC0 != 0x80 {
				return false
			}
			r = r<<6 | rune(cc&0x3F)
		}
		if r < lo || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF) {
			return false
		}
		i += n
	}
	return true
}

// ValidUTF8 reports whether s is a valid MQTT UTF-8 string (1.5.3):
// well-formed UTF-8, no U+0000, at most 65535 bytes.
func ValidUTF8[T Text](s T) bool {
	return len(s) <= MaxStringLen && validUTF8(s)
}

// ValidTopicName checks a topic name as used in PUBLISH (4.7): non-empty,
// at most 65535 bytes, valid UTF-8 without U+0000, no '+' or '#'.
// It returns nil, ErrEmptyTopic, ErrTopicName or ErrUTF8.
func ValidTopicName[T Text](topic T) error {
	if len(topic) == 0 {
		return ErrEmptyTopic
	}
	if len(topic) > MaxStringLen {
		return ErrTopicName
	}
	for i := 0; i < len(topic); i++ {
		if c := topic[i]; c == '+' || c == '#' {
			return ErrTopicName
		}
	}
	if !validUTF8(topic) {
		return ErrUTF8
	}
	return nil
}

// ValidTopicFilter checks a topic filter as used in SUBSCRIBE and
// UNSUBSCRIBE (4.7.1): non-empty, at most 65535 bytes, valid UTF-8 without
// U+0000, '#' only as the whole last level, '+' only as a whole level.
// It returns nil, ErrEmptyTopic, ErrTopicFilter or ErrUTF8.
func ValidTopicFilter[T Text](filter T) error {
	if len(filter) == 0 {
		return ErrEmptyTopic
	}
	if len(filter) > MaxStringLen {
		return ErrTopicFilter
	}
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case '#':
			// Alone in the last level: preceded by nothing or '/', and last.
			if i != len(filter)-1 || (i > 0 && filter[i-1] != '/') {
				return ErrTopicFilter
			}
		case '+':
			if (i > 0 && filter[i-1] != '/') || (i+1 < len(filter) && filter[i+1] != '/') {
				return ErrTopicFilter
			}
		}
	}
	if !validUTF8(filter) {
		return ErrUTF8
	}
	return nil
}

// MatchTopic reports whether topic name topic matches topic filter filter
// with MQTT semantics (4.7): '+' matches exactly one level (possibly
// empty), a trailing '#' matches the parent level and any number of child
// levels, and a filter starting with a wildcard does not match a topic
// starting with '$' (4.7.2). Both arguments should be valid (see
// ValidTopicFilter, ValidTopicName); for invalid ones the result is
// unspecified, but MatchTopic never panics. It does not allocate.
func MatchTopic[F, T Text](filter F, topic T) bool {
	if len(filter) == 0 || len(topic) == 0 {
		return false
	}
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fi, ti := 0, 0
	for {
		// Both fi and ti are at the start of a level.
		if fi < len(filter) && filter[fi] == '#' {
			return true
		}
		if fi < len(filter) && filter[fi] == '+' && (fi+1 == len(filter) || filter[fi+1] == '/') {
			for ti < len(topic) && topic[ti] != '/' {
				ti++
			}
			fi++
		} else {
			for fi < len(filter) && filter[fi] != '/' {
				if ti >= len(topic) || topic[ti] != filter[fi] {
					return false
				}
				fi++
				ti++
			}
			if ti < len(topic) && topic[ti] != '/' {
				return false
			}
		}
		// Both are at the end of a level: at '/' or at the end.
		fEnd, tEnd := fi == len(filter), ti == len(topic)
		switch {
		case fEnd && tEnd:
			return true
		case tEnd:
			// "a/#" also matches "a" (4.7.1.2).
			return len(filter)-fi == 2 && filter[fi+1] == '#'
		case fEnd:
			return false
		}
		fi++
		ti++
	}
}
