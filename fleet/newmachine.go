package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/identity"
)

// newMachineFields and identityFields are the JSON keys NewMachine's
// UnmarshalJSON accepts at the top and in "identity".
var (
	newMachineFields = jsonFields(reflect.TypeFor[NewMachine]())
	identityFields   = jsonFields(reflect.TypeFor[identity.Identity]())
)

func jsonFields(t reflect.Type) map[string]bool {
	fields := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = true
		}
	}
	return fields
}

// UnmarshalJSON decodes a NewMachine strictly: keys are case-sensitive and
// an unknown key is an error ("json: unknown field", as encoding/json's
// DisallowUnknownFields says). A key of "identity" that is not an identity
// field (packages, users, files, runcmd...) is refused with ErrInvalid and
// an *identity.NotIdentityError, whose text says to put it in the image.
func (nm *NewMachine) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !newMachineFields[k] {
			return fmt.Errorf("json: unknown field %q", k)
		}
	}
	if id, ok := raw["identity"]; ok {
		var idRaw map[string]json.RawMessage
		if err := json.Unmarshal(id, &idRaw); err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(idRaw)) {
			if !identityFields[k] {
				return fmt.Errorf("%w: identity: %w", ErrInvalid, &identity.NotIdentityError{Field: k})
			}
		}
	}
	type plain NewMachine // without this method
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	var out plain
	if err := d.Decode(&out); err != nil {
		return err
	}
	*nm = NewMachine(out)
	return nil
}
