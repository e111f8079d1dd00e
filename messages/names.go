package messages

import "fmt"

// MaxNameLen is the longest limit name, in bytes.
const MaxNameLen = 128

// ValidateName checks a limit name. A name is 1 to 128 bytes of ASCII letters,
// digits, '-', '_' and '='. Everything else is refused: Prefect's forbidden
// characters ('/', '%', '&', '>', '<') and every character that would break a
// NATS subject token ('.', '*', '>', whitespace, control characters) or a
// JetStream key-value key. The error names the offending character.
func ValidateName(name string) *Error {
	if name == "" {
		return Errorf(CodeInvalidName, "limit name is empty: give a name of 1 to %d letters, digits, '-', '_' or '='", MaxNameLen)
	}
	if len(name) > MaxNameLen {
		return Errorf(CodeInvalidName, "limit name %.20q... is %d bytes long: the maximum is %d", name, len(name), MaxNameLen)
	}
	for i, r := range name {
		if nameChar(r) {
			continue
		}
		return Errorf(CodeInvalidName, "limit name %q has %s at byte %d: use only letters, digits, '-', '_' or '='", name, describeRune(r), i)
	}
	return nil
}

func nameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '='
}

func describeRune(r rune) string {
	switch {
	case r == ' ':
		return "a space"
	case r == '\t':
		return "a tab"
	case r < 0x20 || r == 0x7f:
		return fmt.Sprintf("control character %U", r)
	case r == 0xfffd:
		return "invalid UTF-8"
	case r > 0x7f:
		return fmt.Sprintf("non-ASCII character %q (%U)", r, r)
	default:
		return fmt.Sprintf("the character %q", r)
	}
}

// MaxKeyedNameLen is the longest limit reference with a key,
// "<name>.<key>": a name and a key of up to MaxNameLen bytes each.
const MaxKeyedNameLen = 2*MaxNameLen + 1

// KeyedName is the reference to key's limit in the per-key family name:
// "<name>.<key>", the subject tokens of its requests.
func KeyedName(name, key string) string { return name + "." + key }

// SplitKeyed splits a limit reference "<name>.<key>" into the family's name
// and the key; keyed is false for a plain name.
func SplitKeyed(ref string) (name, key string, keyed bool) {
	for i := 0; i < len(ref); i++ {
		if ref[i] == '.' {
			return ref[:i], ref[i+1:], true
		}
	}
	return ref, "", false
}

// ValidateKey checks the key of a per-key limit: like a name, 1 to
// MaxNameLen letters, digits, '-', '_' or '='.
func ValidateKey(key string) *Error {
	if key == "" {
		return Errorf(CodeInvalidName, "the key is empty: give 1 to %d letters, digits, '-', '_' or '='", MaxNameLen)
	}
	if len(key) > MaxNameLen {
		return Errorf(CodeInvalidName, "key %.20q... is %d bytes long: the maximum is %d", key, len(key), MaxNameLen)
	}
	for i, r := range key {
		if !nameChar(r) {
			return Errorf(CodeInvalidName, "key %q has %s at byte %d: use only letters, digits, '-', '_' or '='", key, describeRune(r), i)
		}
	}
	return nil
}

// ValidateRef checks a limit reference: a name, or "<name>.<key>" for one
// key of a per-key limit.
func ValidateRef(ref string) *Error {
	name, key, keyed := SplitKeyed(ref)
	if e := ValidateName(name); e != nil {
		return e
	}
	if keyed {
		return ValidateKey(key)
	}
	return nil
}
