module github.com/kiln-dev/kiln

go 1.26.0

require go.etcd.io/bbolt v1.4.3

require (
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
