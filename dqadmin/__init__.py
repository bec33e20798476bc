"""dqadmin: the Django project and app that runs and shows dq queues."""
