"""scaimind/gateway/backend"""
