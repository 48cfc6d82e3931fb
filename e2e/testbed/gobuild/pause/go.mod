// The testbed's pod sandbox binary; standard library only.
module modelrollout.dev/testbed/pause

go 1.24
