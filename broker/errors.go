package broker

import "errors"

// Sentinel errors returned by New, Start and the embedded helpers.
var (
	// ErrConfig wraps every invalid option or configuration.
	ErrConfig = errors.New("broker: invalid configuration")
	// ErrStopped is returned by Start after Stop.
	ErrStopped = errors.New("broker: stopped")
	// ErrStore wraps failures to open or read the key-value bucket.
	ErrStore = errors.New("broker: key-value store")
	// ErrUnavailable is returned when a server cannot be started or reached.
	ErrUnavailable = errors.New("broker: unavailable")
)

// ErrLostLeadership: the broker lost the leader lease (another broker took
// it, or it could not renew it in time) and stopped serving. A supervisor
// starts a new Broker, which stands by.
var ErrLostLeadership = errors.New("broker: lost the leader lease")
