package budget

import (
	"sync"
	"testing"
)

func TestTakeUpToTheLimitThenRefuse(t *testing.T) {
	b := New(10)
	if !b.TryTake(4) || !b.TryTake(6) {
		t.Fatal("10 bytes must fit a budget of 10")
	}
	if b.TryTake(1) || b.InUse() != 10 {
		t.Fatalf("over the limit must be refused without changing the total: %d", b.InUse())
	}
	b.Release(6)
	if !b.TryTake(6) || b.TryTake(1) {
		t.Fatalf("released bytes must be reusable, exactly: %d", b.InUse())
	}
}

func TestConcurrentTakersNeverExceedTheLimit(t *testing.T) {
	b := New(100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.TryTake(7) {
				mu.Lock()
				taken += 7
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if taken > 100 || taken != int(b.InUse()) || taken < 100-7+1 {
		t.Fatalf("taken %d in use %d", taken, b.InUse())
	}
}
