"""Topic creation, so a service starts on an empty broker as well as on a provisioned cluster."""

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics(bootstrap_servers: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        missing = set(names) - set(await admin.list_topics())
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in sorted(missing)]
                )
            except TopicAlreadyExistsError:
                pass  # another service created it between our listing and our request
    finally:
        await admin.close()
