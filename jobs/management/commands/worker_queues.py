from django.core.management.base import BaseCommand

from jobs.hosts import count_devices, worker_queues


class Command(BaseCommand):
    help = (
        "Print the queues a GPU worker on this machine should take, comma-separated: gpu, and "
        "gpu-x2 .. gpu-xN for N visible devices (training runs on several processes). Use: "
        "celery -A fairskin_site worker --queues $(python manage.py worker_queues) ..."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--devices", type=int, help="the devices to plan for (default: what this machine shows)"
        )

    def handle(self, *args, devices=None, **options):
        shown = devices if devices is not None else count_devices()[0]
        self.stdout.write(",".join(worker_queues(max(1, shown))))
