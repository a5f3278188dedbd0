package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/store"
)

// record is a machine as stored: with the hash of its boot's token, which
// the API's JSON of a Machine never shows.
type record struct {
	Machine
	BootTokenHash string `json:"boot_token_hash,omitempty"`
	DiskHash      string `json:"disk_token_hash,omitempty"`
}

func get(tx store.Tx, key string) (Machine, error) {
	v, err := tx.Get(bucket, key)
	if errors.Is(err, store.ErrNotFound) {
		return Machine{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Machine{}, err
	}
	return decode(key, v)
}

func decode(key string, v []byte) (Machine, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return Machine{}, fmt.Errorf("decoding machine %s: %w", key, err)
	}
	m := r.Machine
	if m.Boot != nil {
		m.Boot.TokenHash = r.BootTokenHash
	}
	m.DiskTokenHash = r.DiskHash
	upgrade(&m)
	return m, nil
}

func put(tx store.Tx, m Machine) error {
	r := record{Machine: m, DiskHash: m.DiskTokenHash}
	if m.Boot != nil {
		r.BootTokenHash = m.Boot.TokenHash
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding machine %s: %w", m.MAC, err)
	}
	return tx.Put(bucket, m.MAC, b)
}

// upgrade turns a record of an older kiln (no generations) into
// generation 1 of its hostname and image, op create, with a machine ID
// derived from its MAC (stable: the record is not rewritten by a read).
// Such a record has an image and generation 0; a discovered record (also
// once retired) has neither.
func upgrade(m *Machine) {
	if m.Generation != 0 || m.Image == "" {
		return
	}
	if m.MachineID == "" {
		sum := sha256.Sum256([]byte("kiln machine-id " + m.MAC))
		m.MachineID = hex.EncodeToString(sum[:16])
	}
	m.Generation = 1
	m.Generations = []Generation{{
		N: 1, Image: m.Image, Created: m.Created, Op: "create",
		Identity: identity.Identity{Hostname: m.Hostname, MAC: m.MAC, MachineID: m.MachineID, Generation: 1, Image: m.Image},
	}}
	if m.State == Ready {
		m.Running, m.RunningImage = 1, m.Image
	}
	m.updatePending()
}

// updatePending sets ReimagePending from the generations.
func (m *Machine) updatePending() {
	m.ReimagePending = m.Generation != 0 &&
		(m.Running != m.Generation || m.Mode == Install && m.Installed != m.Generation)
}

func normalizeMAC(mac string) (string, error) {
	key, err := identity.NormalizeMAC(mac)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return key, nil
}

func actorName(actor string) string {
	if actor == "" {
		return "unknown"
	}
	return actor
}
