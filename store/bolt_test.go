package store

import (
	"errors"
	"path/filepath"
	"testing"
)

func openTest(t *testing.T) *Bolt {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestBoltPutGetDelete(t *testing.T) {
	s := openTest(t)
	if err := s.Update(func(tx Tx) error { return tx.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := s.View(func(tx Tx) (err error) { got, err = tx.Get("b", "k"); return err }); err != nil {
		t.Fatal(err)
	}
	if string(got) != "v" {
		t.Fatalf("Get(b, k) = %q, want %q", got, "v")
	}
	if err := s.Update(func(tx Tx) error { return tx.Delete("b", "k") }); err != nil {
		t.Fatal(err)
	}
	err := s.View(func(tx Tx) error { _, err := tx.Get("b", "k"); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
	}
}

func TestBoltUpdateRollsBack(t *testing.T) {
	s := openTest(t)
	boom := errors.New("boom")
	err := s.Update(func(tx Tx) error {
		if err := tx.Put("b", "k", []byte("v")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update err = %v, want %v", err, boom)
	}
	err = s.View(func(tx Tx) error { _, err := tx.Get("b", "k"); return err })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after failed Update: err = %v, want ErrNotFound", err)
	}
}

func TestBoltForEachOrdered(t *testing.T) {
	s := openTest(t)
	if err := s.Update(func(tx Tx) error {
		for _, k := range []string{"c", "a", "b"} {
			if err := tx.Put("b", k, []byte(k)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var keys string
	if err := s.View(func(tx Tx) error {
		return tx.ForEach("b", func(k string, _ []byte) error { keys += k; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if keys != "abc" {
		t.Fatalf("ForEach order = %q, want %q", keys, "abc")
	}
}

func TestBoltReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error { return tx.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.View(func(tx Tx) error { _, err := tx.Get("b", "k"); return err }); err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
}
