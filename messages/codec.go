package messages

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Encoding is the body format of a message.
type Encoding uint8

// Encodings. The broker answers in the encoding of the request.
const (
	Msgpack Encoding = iota
	JSON
)

// String names the encoding.
func (e Encoding) String() string {
	if e == JSON {
		return "json"
	}
	return "msgpack"
}

// Detect tells the encoding of a body: JSON when it is empty or its first
// non-blank byte is '{', msgpack otherwise (a msgpack map never starts with '{').
func Detect(data []byte) Encoding {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || t[0] == '{' {
		return JSON
	}
	return Msgpack
}

// Marshal encodes v. Msgpack uses the json struct tags, so both encodings
// share one set of field names.
func Marshal(enc Encoding, v any) ([]byte, error) {
	if enc == JSON {
		return json.Marshal(v)
	}
	var buf bytes.Buffer
	e := msgpack.GetEncoder() // pooled: encoders are costly to make on every message
	defer msgpack.PutEncoder(e)
	e.Reset(&buf)
	e.SetCustomStructTag("json")
	e.SetOmitEmpty(true)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes data in the given encoding into v. An empty JSON body
// decodes as an empty object.
func Unmarshal(enc Encoding, data []byte, v any) error {
	if enc == JSON {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("decode JSON: %w", err)
		}
		return nil
	}
	return unmarshalMsgpack(data, v)
}

// unmarshalMsgpack decodes a msgpack body with a fresh decoder. Not a pooled
// one: msgpack v5.4.1 grows a decoder's buffer by 1 MiB or more whenever a
// body declares a string or binary longer than that buffer, and keeps it, so
// pooled decoders fed tiny bodies such as "\x81\xc6\xff\xff\xff\xff" grew
// without bound (found by FuzzDecodeRequests). The library also panics on
// some malformed bodies (nil for a time.Time field): such a body is refused
// with an error like any other malformed one instead of crashing the broker
// or the client. The library also allocates for the lengths a body declares
// before reading what they cover (over 1 MiB for a 6-byte body declaring a
// 4 GiB binary, 16 MB for a 12-byte one declaring an array of 4 Gi names):
// checkMsgpack refuses, before any decoding, a body that declares more than
// it holds.
func unmarshalMsgpack(data []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decode msgpack: malformed body: %v", r)
		}
	}()
	if err := checkMsgpack(data); err != nil {
		return fmt.Errorf("decode msgpack: %w", err)
	}
	d := msgpack.NewDecoder(bytes.NewReader(data))
	d.SetCustomStructTag("json")
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("decode msgpack: %w", err)
	}
	return nil
}

// Decode detects the encoding of data and decodes it into v.
func Decode(data []byte, v any) (Encoding, error) {
	enc := Detect(data)
	return enc, Unmarshal(enc, data, v)
}
