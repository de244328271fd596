"""scaimind/gateway/security"""
