package messages

import (
	"strings"
	"unicode/utf8"
)

// CheckReply checks the reply subject of a request before the broker answers
// on it. The broker answers only on literal subjects of at most
// MaxSubjectLen bytes outside the reserved namespaces: nothing under '$'
// (JetStream, KV, system and service subjects) and nothing under the
// service's own prefix, so that no request can make the broker publish into
// its own verbs or its storage. A request failing this check is dropped
// without an answer (there is nowhere safe to answer).
func CheckReply(reply, servicePrefix string) *Error {
	if reply == "" {
		return Errorf(CodeBadRequest, "the request has no reply subject: send it as a request")
	}
	if e := checkLiteral("reply subject", reply); e != nil {
		return e
	}
	if reserved(reply, servicePrefix) {
		return Errorf(CodeBadRequest, "reply subject %q is in a reserved namespace ('$...' or %q)", reply, servicePrefix+".>")
	}
	return nil
}

// InboxPrefix is the inbox prefix of a request's reply subject: its tokens
// but the last two. nats.go (and the other NATS clients) send requests with
// reply subjects "<inbox prefix>.<connection token>.<request token>", and
// nats.NewInbox returns "<inbox prefix>.<token>". It returns "" when the
// reply has fewer than three tokens.
func InboxPrefix(reply string) string {
	i := strings.LastIndexByte(reply, '.')
	if i <= 0 {
		return ""
	}
	j := strings.LastIndexByte(reply[:i], '.')
	if j <= 0 {
		return ""
	}
	return reply[:j]
}

// CheckNotify checks an acquisition's notify subject against the request's
// reply subject: the notify must be a literal subject of at most
// MaxSubjectLen bytes with exactly two tokens after the reply's inbox prefix
// ("<inbox prefix>.<inbox token>.<wait token>", as nats.NewInbox()+"."+id
// makes). With a per-user inbox prefix (nats.CustomInboxPrefix) a client
// can therefore only name subjects its own user may subscribe to.
func CheckNotify(notify, reply, servicePrefix string) *Error {
	if e := checkLiteral("notify", notify); e != nil {
		return e
	}
	prefix := InboxPrefix(reply)
	if prefix == "" {
		return Errorf(CodeBadRequest, "reply subject %q has no inbox prefix (want \"<prefix>.<token>.<token>\"): send the request with nats.go's Request or another client's muxed request", reply)
	}
	rest, ok := strings.CutPrefix(notify, prefix+".")
	if !ok || strings.Count(rest, ".") != 1 {
		return Errorf(CodeBadRequest, "notify %q is not in the requester's inbox: give \"%s.<token>.<token>\" (the inbox prefix of the reply subject, then two tokens)", notify, prefix)
	}
	if reserved(notify, servicePrefix) {
		return Errorf(CodeBadRequest, "notify %q is in a reserved namespace", notify)
	}
	return nil
}

// reserved tells whether subject is under '$' or under the service prefix.
func reserved(subject, servicePrefix string) bool {
	return strings.HasPrefix(subject, "$") || subject == servicePrefix || strings.HasPrefix(subject, servicePrefix+".")
}

// checkLiteral checks that s is a literal subject of at most MaxSubjectLen
// bytes: non-empty tokens of printable ASCII without wildcards.
func checkLiteral(what, s string) *Error {
	if s == "" {
		return Errorf(CodeBadRequest, "%s is empty", what)
	}
	if len(s) > MaxSubjectLen {
		return Errorf(CodeBadRequest, "%s is %d bytes long: the maximum is %d", what, len(s), MaxSubjectLen)
	}
	tokenStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if tokenStart {
				return Errorf(CodeBadRequest, "%s %q has an empty token", what, s)
			}
			tokenStart = true
			continue
		case c == '*' || c == '>':
			return Errorf(CodeBadRequest, "%s %q has a wildcard: give a literal subject", what, s)
		case c <= ' ' || c >= 0x7f:
			return Errorf(CodeBadRequest, "%s %q has %s at byte %d", what, s, describeRune(rune(c)), i)
		}
		tokenStart = false
	}
	if tokenStart {
		return Errorf(CodeBadRequest, "%s %q ends with '.'", what, s)
	}
	return nil
}

// CheckHolder checks a holder description: at most MaxHolderLen bytes of
// valid UTF-8 without control characters (it is shown on operators'
// terminals and pages).
func CheckHolder(holder string) *Error {
	if len(holder) > MaxHolderLen {
		return Errorf(CodeInvalidArgument, "holder is %d bytes long: the maximum is %d", len(holder), MaxHolderLen)
	}
	for i, r := range holder {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return Errorf(CodeInvalidArgument, "holder has %s at byte %d: give printable text", describeRune(r), i)
		}
	}
	return nil
}

// CheckKey checks a grant key: MinKeyLen to MaxKeyLen name characters.
func CheckKey(key string) *Error {
	if len(key) < MinKeyLen || len(key) > MaxKeyLen {
		return Errorf(CodeBadRequest, "key is %d bytes long: give %d to %d random letters or digits (the broker echoes it in the Grant)", len(key), MinKeyLen, MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if !nameChar(rune(key[i])) {
			return Errorf(CodeBadRequest, "key has %s at byte %d: use letters, digits, '-', '_' or '='", describeRune(rune(key[i])), i)
		}
	}
	return nil
}

// CheckPushSubject checks a subject the broker is about to publish a grant
// or failure to, as stored with a waiter: literal, at most MaxSubjectLen
// bytes, outside the reserved namespaces. The broker checks it on every push
// and on every record it loads, so that nothing stored by an older broker
// can make it publish where it must not.
func CheckPushSubject(subject, servicePrefix string) *Error {
	if e := checkLiteral("notify", subject); e != nil {
		return e
	}
	if reserved(subject, servicePrefix) {
		return Errorf(CodeBadRequest, "notify %q is in a reserved namespace", subject)
	}
	return nil
}
