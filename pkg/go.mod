module github.com/hookbus/hookbus/pkg

go 1.26.8

require (
	github.com/kelseyhightower/envconfig v1.4.0
	github.com/rabbitmq/amqp091-go v1.17.0
	go.uber.org/goleak v1.3.0
)
