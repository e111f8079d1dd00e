package broker

import (
	"fmt"
	"testing"
	"time"
)

func TestWaitMemoryKeepsIDsBetweenTTLAndOneAndAQuarter(t *testing.T) {
	const ttl = 2 * time.Minute
	m := newWaitMemory(ttl)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// One id remembered every 10 s over 10 minutes: each must be there
	// until ttl after it was remembered, and gone 1.25 ttl after.
	at := map[string]time.Time{}
	for i := 0; i <= 60; i++ {
		now := t0.Add(time.Duration(i) * 10 * time.Second)
		id := fmt.Sprintf("w%d", i)
		m.remember(now, id, i%3) // 0: a cancel, else admissions
		at[id] = now
		for old, when := range at {
			n, ok := m.lookup(old)
			age := now.Sub(when)
			switch {
			case age < ttl && !ok:
				t.Fatalf("%s forgotten %v after it was remembered, before the ttl %v", old, age, ttl)
			case ok && age > ttl*5/4:
				t.Fatalf("%s still remembered %v after, more than 1.25 ttl", old, age)
			case ok && n != mustAtoi(t, old[1:])%3:
				t.Fatalf("%s = %d, want %d", old, n, mustAtoi(t, old[1:])%3)
			}
		}
	}
}

func TestWaitMemoryCancelKeepsAdmission(t *testing.T) {
	m := newWaitMemory(time.Minute)
	now := time.Now()
	m.remember(now, "a", 3)
	m.remember(now.Add(40*time.Second), "a", 0) // a cancel after the admission, in a later generation
	if n, ok := m.lookup("a"); !ok || n != 3 {
		t.Fatalf("lookup after cancel = %d, %v; want the admission's 3", n, ok)
	}
	if _, ok := m.lookup("b"); ok {
		t.Fatal("an id never remembered is found")
	}
	// Long idle: everything is older than the ttl.
	m.remember(now.Add(time.Hour), "c", 0)
	if _, ok := m.lookup("a"); ok {
		t.Fatal("an id from an hour ago is still remembered")
	}
	if n, ok := m.lookup("c"); !ok || n != 0 {
		t.Fatalf("lookup c = %d, %v; want 0, true", n, ok)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
