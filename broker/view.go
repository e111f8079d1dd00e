package broker

import "sync"

// recordView is the record set as the journal has stored it: every live
// limit, lease and waiter record by key, after the appends up to seq. The
// journal writer applies each stored append to it, and recovery applies the
// snapshot and the journal after it through the same apply, so that both
// reach the same records. Snapshots are written from it.
//
// While a snapshot is being written the base map is frozen (read by the
// snapshot, unchanged) and appends go to an overlay, merged into the base
// when the snapshot is done: a snapshot never stops appends for longer than
// the merge of what changed meanwhile.
type recordView struct {
	mu      sync.Mutex
	base    map[string][]byte
	overlay map[string][]byte // nil unless frozen; a nil value is a deletion
	seq     uint64
}

func newRecordView() *recordView { return &recordView{base: map[string][]byte{}} }

// apply applies ops, stored up to seq.
func (v *recordView) apply(ops []journalOp, seq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, op := range ops {
		var val []byte
		if len(op.Val) > 0 {
			val = op.Val
		}
		switch {
		case v.overlay != nil:
			v.overlay[op.Key] = val
		case val == nil:
			delete(v.base, op.Key)
		default:
			v.base[op.Key] = val
		}
	}
	if seq > v.seq {
		v.seq = seq
	}
}

// freeze returns the base records and their sequence; they stay unchanged
// until thaw. Only one freeze at a time.
func (v *recordView) freeze() (map[string][]byte, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.overlay = map[string][]byte{}
	return v.base, v.seq
}

// thaw merges what changed since freeze into the base.
func (v *recordView) thaw() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, val := range v.overlay {
		if val == nil {
			delete(v.base, k)
		} else {
			v.base[k] = val
		}
	}
	v.overlay = nil
}

// records returns a copy of the current records (for recovery and tests).
func (v *recordView) records() map[string][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string][]byte, len(v.base))
	for k, val := range v.base {
		out[k] = val
	}
	for k, val := range v.overlay {
		if val == nil {
			delete(out, k)
		} else {
			out[k] = val
		}
	}
	return out
}
