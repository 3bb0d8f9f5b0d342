from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8001
    mongodb_database: str = "switchboard_intake"
